"""Long prompts cost memory linear in their length, on every path: no length² mask for a prompt
alone (PyTorch), batches cut by a padded-token budget (classify, annotate), and an ONNX Runtime
export refuses what its whole attention scores could not hold (docs/service.md, "What the limits cost")."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from guardedge.runtime.architectures.base import Encoded
from guardedge.runtime.engine import Engine, EngineOptions, Prepared


def _prepared(*lengths: int) -> Prepared:
    return Prepared(request=None, rows=[("", Encoded(list(range(n)))) for n in lengths], preprocess_s=0.0, queued_at=0.0)  # type: ignore[arg-type]


def test_batches_keep_order_and_the_padded_token_budget():
    engine = SimpleNamespace(options=EngineOptions(max_batch_size=3, max_batch_tokens=100))
    items = [_prepared(10), _prepared(20), _prepared(30), _prepared(200), _prepared(10), _prepared(40, 40), _prepared(5)]
    got = Engine.batches(engine, items)  # type: ignore[arg-type]
    assert [p for batch in got for p in batch] == items  # every request once, in order
    # 3 x 30 fits 100 (at most 3 requests); 200 alone; a ShieldGemma-style request's prompts count
    # as rows: 10 + (40, 40) is 3 rows x 40 > 100, and so is (40, 40) + 5.
    assert [[len(p.rows[0][1].input_ids) for p in batch] for batch in got] == [[10, 20, 30], [200], [10], [40], [5]]
    unbounded = SimpleNamespace(options=EngineOptions(max_batch_size=8, max_batch_tokens=0))
    assert len(Engine.batches(unbounded, items)) == 1  # type: ignore[arg-type]


def test_the_server_batcher_cuts_by_the_same_rule_counting_every_prompt_row():
    """The batcher and ``Engine.batches`` share ``fits_budget``: a ShieldGemma-style request's
    policies are rows, so 2 x 40 joins a 10-token request within 120 tokens, 3 x 40 does not."""
    from guardedge.runtime.engine import fits_budget
    from guardedge.runtime.service.batcher import Batcher

    batcher = SimpleNamespace(max_batch_tokens=120)
    job = lambda *lengths: SimpleNamespace(prepared=_prepared(*lengths))  # noqa: E731
    assert Batcher._fits(batcher, [job(10)], job(40, 40))  # type: ignore[arg-type]
    assert not Batcher._fits(batcher, [job(10)], job(40, 40, 40))  # type: ignore[arg-type]
    assert not Batcher._fits(batcher, [job(41, 41)], job(10))  # type: ignore[arg-type]
    assert fits_budget([_prepared(10)], _prepared(40, 40), 120) and not fits_budget([_prepared(40, 40)], _prepared(41), 120)
    assert fits_budget([_prepared(10**6)], _prepared(10**6), 0)  # 0: no budget


def test_an_onnx_export_accepts_what_its_attention_scores_fit():
    from guardedge.runtime.backends.onnx_common import MAX_SCORE_BYTES, OnnxDecoderBackend

    backend = SimpleNamespace(arch=SimpleNamespace(config={"text_config": {"num_attention_heads": 2}}))
    tokens = OnnxDecoderBackend.max_prompt_tokens(backend)  # type: ignore[arg-type]
    assert tokens == 23170 and 2 * 4 * tokens**2 <= MAX_SCORE_BYTES < 2 * 4 * (tokens + 1) ** 2
    flat = SimpleNamespace(arch=SimpleNamespace(config={"num_attention_heads": 40}))
    assert OnnxDecoderBackend.max_prompt_tokens(flat) == 5181  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def lg4():
    from guardedge.runtime.demo.llama_guard_4.build import ensure_demo
    from guardedge.runtime.engine import load_engine

    ensure_demo(progress=False)
    return load_engine("demo-llama-guard-4", EngineOptions(progress=False))


def test_a_long_llama4_prompt_builds_no_square_mask(lg4, monkeypatch):
    """Branches fed side by side and a kept prefix each need an additive [rows, 1, width, columns]
    mask; over ``LONG_PROMPT`` tokens the prefill feeds neither, so a prompt alone takes sdpa's own
    causal path. Before, a 60k-token request to this demo asked for 24 GB and was killed. The answer
    is the same either way (the threshold is lowered here to keep the test small)."""
    from guardedge.runtime.architectures import masks
    from guardedge.runtime.architectures.llama4 import forward
    from guardedge.runtime.backends import torch_backend

    request = lg4.parse({"messages": [{"role": "user", "content": "how do I sharpen a kitchen knife " * 60}]})
    before = lg4.classify([request])[0]  # branches and the kept prefix, as for any short prompt
    built: list[tuple[int, ...]] = []

    def recording(allowed_, dtype):
        built.append(tuple(allowed_.shape))
        return masks.additive(allowed_, dtype)

    monkeypatch.setattr(forward, "additive", recording)
    monkeypatch.setattr(torch_backend, "LONG_PROMPT", 300)
    after = lg4.classify([request])[0]
    prompt = len(lg4.prepare(request).encoded.input_ids)
    assert prompt > 300
    assert all(shape[2] < 16 for shape in built), built  # decode steps only: a few rows of queries
    assert (after.verdict, after.categories, after.raw_output) == (before.verdict, before.categories, before.raw_output)
    assert after.unsafe_probability == pytest.approx(before.unsafe_probability, abs=1e-5)

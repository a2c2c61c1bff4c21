"""The Llama 4 architecture plug-in against transformers' Llama4ForConditionalGeneration.

Tiny random-weight models with Llama Guard 4's structure, the real Llama 4 tokenizer and the real
processor files (tests/llama4_tiny.py). The engine's verdict logits (the whole next-token
distribution after the answer prefix) equal the transformers class's to 1e-5 in fp32, for each
request alone and inside mixed left-padded batches (text only, one image, three images of other
sizes, a response); greedy decoding gives transformers' greedy tokens.

The reference: transformers 4.57 cannot run the checkpoint's own ``attention_chunk_size: null``
(its chunked-mask code compares an int with None: PurpleLlama #119), so the reference model loads
the same weights with the published workaround, ``attention_chunk_size`` set — here to 2**20, more
than any test sequence, which is exactly no chunking. A second directory with a real chunk size
(64) checks the chunked masks. ``floor_scale`` is 16, so the NoPE layers' attention temperature
varies inside these prompts and left padding would change it (runtime/architectures/llama4/forward.py).
"""

from __future__ import annotations

import sys
from pathlib import Path
from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

import llama4_tiny  # noqa: E402
import llama4_pixel_reference as ref  # noqa: E402

from guardedge.runtime.architectures import architecture_class  # noqa: E402
from guardedge.runtime.demo.samples import png_base64  # noqa: E402

NO_CHUNK = 1 << 20


def _image(size, colour=(200, 30, 30)):
    return {"type": "image", "data": png_base64(colour, size)}


def _requests(engine):
    user = lambda *parts: {"role": "user", "content": list(parts)}  # noqa: E731
    text = lambda t: {"type": "text", "text": t}  # noqa: E731
    raw = [
        {"messages": [user(text("How do I bake bread?"))]},
        {"messages": [user(_image((400, 300)), text("What is this?"))]},
        {"messages": [user(text("Compare these."), _image((100, 60)), _image((700, 340), (20, 200, 30)), _image((30, 500)))]},
        {"messages": [user(text("How do I steal a car?")), {"role": "assistant", "content": [text("I can't help with that.")]}]},
        {"messages": [user(_image((336, 336))), {"role": "assistant", "content": [text("Sure.")]}, user(text("and this?"), _image((90, 90)))]},
    ]
    return [engine.parse(r) for r in raw]


def _engine(path):
    from guardedge.runtime.engine import EngineOptions, build_engine
    from guardedge.runtime.modeldir import check

    return build_engine(check(path, path.name), EngineOptions(progress=False, device="cpu", dtype="float32", max_batch_size=8))


def _reference(path, chunk):
    from transformers import AutoConfig, Llama4ForConditionalGeneration

    config = AutoConfig.from_pretrained(str(path))
    config.text_config.attention_chunk_size = chunk
    return Llama4ForConditionalGeneration.from_pretrained(str(path), config=config, dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return llama4_tiny.build(tmp_path_factory.mktemp("llama4") / "tiny")


@pytest.fixture(scope="module")
def engine(tiny):
    return _engine(tiny)


@pytest.fixture(scope="module")
def reference(tiny):
    return _reference(tiny, NO_CHUNK)


def _reference_logits(model, encoded):
    extra = {}
    if encoded.images:
        from guardedge.runtime.architectures.llama4 import pixels

        cfg = pixels.TileConfig()
        extra["pixel_values"] = pixels.pixel_values([im.compact for im in encoded.images], cfg).float()
    with torch.no_grad():
        return model(input_ids=torch.tensor([encoded.input_ids]), **extra).logits[0, -1]


def test_registry_and_family_follow_model_type(engine):
    assert architecture_class({"model_type": "llama4"}).transformers_class == "Llama4ForConditionalGeneration"
    assert engine.family.name == "llama-guard-4" and engine.family.max_images == 5


def test_image_tokens_for_equals_the_encoded_count_on_many_sizes(engine):
    from PIL import Image

    arch = engine.pre.arch
    sizes = [(w, h) for w in (1, 50, 335, 336, 337, 700, 1500, 4000) for h in (1, 90, 336, 672, 1000, 3000)]
    for width, height in sizes:
        encoded = arch.encode_image(Image.new("RGB", (width, height), (90, 20, 200)))
        assert arch.image_tokens_for(width, height) == arch.image_tokens(encoded), (width, height)


def test_expansion_is_the_processors_prompt_split(engine):
    """The span equals Llama4Processor._prompt_split_image's string, tokenized."""
    from transformers.models.llama4.processing_llama4 import Llama4Processor

    arch, tok = engine.pre.arch, llama4_tiny.tokenizer()
    assert arch.per_tile == 144
    for rows, cols in [(1, 1), (1, 2), (2, 1), (3, 5), (4, 4)]:
        text = Llama4Processor._prompt_split_image(None, (rows, cols), 144)
        assert tok.encode(text, add_special_tokens=False) == arch.span(rows, cols), (rows, cols)


def test_verdict_logits_equal_transformers_alone_and_in_padded_batches(engine, reference):
    prepared = [engine.prepare(r) for r in _requests(engine)]
    assert [len(p.encoded.images) for p in prepared] == [0, 1, 3, 0, 2]
    together, _ = engine.backend.prefill(engine.pre.collate([p.encoded for p in prepared]))
    for i, p in enumerate(prepared):
        alone, _ = engine.backend.prefill(engine.pre.collate([p.encoded]))
        expected = _reference_logits(reference, p.encoded)
        assert torch.allclose(alone[0], expected, atol=1e-5, rtol=0), (i, float((alone[0] - expected).abs().max()))
        assert torch.allclose(together[i], expected, atol=1e-5, rtol=0), (i, float((together[i] - expected).abs().max()))


def test_padded_rows_need_their_own_attention_temperature(engine, reference):
    """Without per-row temperature (transformers' column-based scale), a left-padded row moves:
    the check above can fail."""
    from guardedge.runtime.architectures.llama4 import forward

    prepared = [engine.prepare(r) for r in _requests(engine)[:2]]
    original = forward.RowTemperature.__call__
    try:
        forward.RowTemperature.__call__ = lambda self, positions, cache: original(self, cache[None].expand_as(positions), cache)
        engine.backend.bind(engine.pre.arch)
        together, _ = engine.backend.prefill(engine.pre.collate([p.encoded for p in prepared]))
    finally:
        forward.RowTemperature.__call__ = original
        engine.backend.bind(engine.pre.arch)
    short = 0 if len(prepared[0].encoded.input_ids) < len(prepared[1].encoded.input_ids) else 1
    expected = _reference_logits(reference, prepared[short].encoded)
    assert float((together[short] - expected).abs().max()) > 1e-4


def test_greedy_decoding_equals_transformers(engine, reference):
    """The engine's drafted, KV-cached decode gives transformers' greedy ``generate`` tokens."""
    requests = _requests(engine)
    prepared = [engine.prepare(r) for r in (requests[0], requests[1], requests[3])]
    logits, state = engine.backend.prefill(engine.pre.collate([p.encoded for p in prepared]), engine.prefill_draft)
    first = logits.argmax(-1).tolist()
    decoded = engine.backend.decode(state, [0, 1, 2], first, 8, set(), engine.drafter)  # the forced first token included
    for p, tokens in zip(prepared, decoded):
        extra = {}
        if p.encoded.images:
            from guardedge.runtime.architectures.llama4 import pixels

            extra["pixel_values"] = pixels.pixel_values([im.compact for im in p.encoded.images], pixels.TileConfig()).float()
        with torch.no_grad():
            out = reference.generate(input_ids=torch.tensor([p.encoded.input_ids]), max_new_tokens=8, do_sample=False,
                                     pad_token_id=200018, **extra)
        generated = out[0, len(p.encoded.input_ids):].tolist()
        assert tokens == generated


def _generated(reference, encoded, steps: int = 8) -> list[int]:
    """transformers' greedy ``generate`` tokens after ``encoded``."""
    extra = {}
    if encoded.images:
        from guardedge.runtime.architectures.llama4 import pixels

        extra["pixel_values"] = pixels.pixel_values([im.compact for im in encoded.images], pixels.TileConfig()).float()
    with torch.no_grad():
        out = reference.generate(input_ids=torch.tensor([encoded.input_ids]), max_new_tokens=steps, do_sample=False,
                                 pad_token_id=200018, **extra)
    return out[0, len(encoded.input_ids):].tolist()


@pytest.fixture
def kept(engine):
    """The engine's backend with a fresh prefix cache of two entries, and the widths its trunk is fed."""
    from guardedge.runtime.backends.prefix_cache import PrefixCache

    backend = engine.backend
    assert backend.prefixes is not None  # an engine on Llama 4 keeps prefixes by default (EngineOptions.prefix_cache)
    saved, trunk, widths = backend.prefixes, backend.trunk, []
    backend.prefixes = PrefixCache(entries=2)
    backend.trunk = lambda **kw: widths.append(kw["input_ids"].shape[1]) or trunk(**kw)
    yield backend, widths
    backend.prefixes, backend.trunk = saved, trunk


def test_a_kept_prefix_feeds_only_the_rest_with_transformers_logits(engine, reference, kept):
    """The policy's KV cache, kept from one request, serves the others (alone and in a padded batch,
    text, one, two and three images): only what follows it is fed, and every row's verdict logits
    still equal transformers' whole-prompt forward to 1e-5 (``floor_scale`` 16: the NoPE
    temperature follows each row's own positions after the kept columns too). A response's task
    line names 'Agent' messages: its prompt parts from the user prompts' early on, and is kept apart."""
    backend, widths = kept
    requests = _requests(engine)
    prepared = [engine.prepare(r) for r in requests[:3] + requests[4:]]
    backend.prefill_prompts([prepared[0].encoded])  # a miss: runs whole, its prefix is kept
    assert (backend.prefixes.misses, backend.prefixes.hits, len(backend.prefixes)) == (1, 0, 1)
    assert widths == [len(prepared[0].encoded.input_ids)]
    together, _ = backend.prefill_prompts([p.encoded for p in prepared])
    for i, p in enumerate(prepared):
        alone, _ = backend.prefill_prompts([p.encoded])
        expected = _reference_logits(reference, p.encoded)
        assert torch.allclose(alone[0], expected, atol=1e-5, rtol=0), (i, float((alone[0] - expected).abs().max()))
        assert torch.allclose(together[i], expected, atol=1e-5, rtol=0), (i, float((together[i] - expected).abs().max()))
    assert backend.prefixes.hits == 1 + len(prepared)
    from guardedge.runtime.backends.prefix_cache import common_length

    first = prepared[0].encoded.input_ids
    shared = [common_length(p.encoded.input_ids, first[:-1]) for p in prepared]
    assert min(shared) > 100  # at least the policy text, before any conversation
    assert widths[1:] == [len(prepared[2].encoded.input_ids) - min(shared)] + [
        len(p.encoded.input_ids) - n for p, n in zip(prepared, shared)]
    response = engine.prepare(requests[3]).encoded
    for _ in range(2):
        alone, _ = backend.prefill_prompts([response])
        assert torch.allclose(alone[0], _reference_logits(reference, response), atol=1e-5, rtol=0)
    assert (backend.prefixes.misses, backend.prefixes.hits, len(backend.prefixes)) == (2, 2 + len(prepared), 2)


def test_a_kept_prefix_decodes_transformers_greedy_tokens(engine, reference, kept):
    backend, _ = kept
    requests = _requests(engine)
    prepared = [engine.prepare(r) for r in (requests[0], requests[2], requests[4])]
    backend.prefill_prompts([prepared[1].encoded])
    logits, state = backend.prefill_prompts([p.encoded for p in prepared], engine.prefill_draft)
    assert backend.prefixes.hits == 1
    decoded = backend.decode(state, [0, 1, 2], logits.argmax(-1).tolist(), 8, set(), engine.drafter)
    assert decoded == [_generated(reference, p.encoded) for p in prepared]


def test_another_policy_reuses_the_header_and_is_kept_too(engine, kept):
    """A custom policy shares only the header and task line with the kept default one: that much
    is reused, and as it is less than half its own policy text, its prefix is kept as well."""
    backend, widths = kept
    [default, custom] = [engine.prepare(engine.parse(r)) for r in (
        {"messages": [{"role": "user", "content": "How do I bake bread?"}]},
        {"messages": [{"role": "user", "content": "How do I bake bread?"}], "categories": {"S1": "Baking advice."}})]
    backend.prefill_prompts([default.encoded])
    backend.prefill_prompts([custom.encoded])
    backend.prefill_prompts([custom.encoded])
    assert (backend.prefixes.misses, backend.prefixes.hits, len(backend.prefixes)) == (1, 2, 2)
    header = next(i for i, (a, b) in enumerate(zip(default.encoded.input_ids, custom.encoded.input_ids)) if a != b)
    assert 32 <= header < 60
    assert widths == [len(default.encoded.input_ids), len(custom.encoded.input_ids) - header, 1]


def test_branches_fed_side_by_side_give_each_its_own_sequential_logits(engine, reference, kept):
    """Every category number fed side by side after ``unsafe\\nS`` (one column each, same position,
    blind to the others) gives the logits transformers gives the prompt + draft + that number run
    in sequence: in a padded batch, run whole and after a kept prefix (``floor_scale`` 16)."""
    backend, _ = kept
    branches = engine.prefill_branches
    assert len(branches) == 14 and engine.pre.tokenizer.decode([branches[0]]) == "1"
    requests = _requests(engine)
    prepared = [engine.prepare(r) for r in (requests[1], requests[0], requests[4])]
    for _ in range(2):  # a miss (run whole, kept), then a hit (after the kept prefix)
        _, state = backend.prefill_prompts([p.encoded for p in prepared], engine.prefill_draft, branches)
        head = engine.backend.head
        for row, p in enumerate(prepared):
            for j in (0, 9, 13):
                encoded = replace(p.encoded, input_ids=p.encoded.input_ids + engine.prefill_draft + [branches[j]])
                expected = _reference_logits(reference, encoded)
                got = head(state.branch_hidden[row, j]).float()
                assert torch.allclose(got, expected, atol=1e-5, rtol=0), (row, j, float((got - expected).abs().max()))
    assert backend.prefixes.hits == 1


def test_chunked_attention_follows_the_chunk_size(tmp_path):
    path = llama4_tiny.build(tmp_path / "chunked", chunk=64, seed=1)
    engine = _engine(path)
    model = _reference(path, 64)
    prepared = [engine.prepare(r) for r in _requests(engine)[:3]]
    together, _ = engine.backend.prefill(engine.pre.collate([p.encoded for p in prepared]))
    for i, p in enumerate(prepared):
        expected = _reference_logits(model, p.encoded)
        assert torch.allclose(together[i], expected, atol=1e-5, rtol=0), (i, float((together[i] - expected).abs().max()))
    unchunked = _reference_logits(_reference(path, NO_CHUNK), prepared[0].encoded)
    assert float((unchunked - together[0]).abs().max()) > 1e-4  # the chunk size really changes the answer


def test_prompt_ids_equal_the_card_processors(tiny, engine):
    """The engine's ids (before the answer prefix) are what the card's ``processor.apply_chat_template``
    gives: transformers' Llama4Processor (placeholder expansion, tokenization) over the directory's
    template, with the exact image processor the bench reference uses."""
    from guardedge.bench import reference_llama_guard_4 as card

    processor = card.load_processor(str(tiny))
    model = SimpleNamespace(dtype=torch.float32, device=torch.device("cpu"))
    for request in _requests(engine):
        inputs = card.card_inputs(processor, model, request)
        ours = engine.prepare(request).encoded.input_ids
        assert inputs["input_ids"][0].tolist() == ours[:-1] and ours[-1] == 368


def test_bench_floors_time_the_card_forward_with_and_without_its_inputs(tiny, engine, monkeypatch):
    """The bench's two floors: the card's processor + one forward, and that forward alone, whose
    inputs are made once per request (before the timer, from the second call on)."""
    from guardedge.bench import reference_llama_guard_4 as card

    made = []
    real = card.card_inputs
    monkeypatch.setattr(card, "card_inputs", lambda *args: made.append(1) or real(*args))
    floors = card.floors(str(tiny), engine)
    assert set(floors) == {"card_forward", "card_model_forward"} and set(floors) <= set(card.LABELS)
    request = _requests(engine)[0]
    for _ in range(3):
        floors["card_model_forward"](None, request)
    assert len(made) == 1
    floors["card_forward"](None, request)
    assert len(made) == 2


def test_bench_reference_times_the_engine_with_and_without_its_prefix_cache(monkeypatch):
    """`bench reference` on a Llama 4 (whose engine keeps the policy's KV cache) adds the row that
    says what the cache buys (the demo Llama Guard 4; the card's side replaced by a 1 ms sleep: its
    cost is not the point here)."""
    import time

    from guardedge.bench import reference
    from guardedge.runtime.demo.llama_guard_4.build import ensure_demo

    real = reference.side_for("llama-guard-4")
    card = {"card": lambda case, request: time.sleep(0.001) or "\n\nsafe"}
    fake = SimpleNamespace(cases=real.cases, snippets=lambda path, engine: card, REFERENCE="card", LABELS={"card": "1 ms"})
    monkeypatch.setattr(reference, "side_for", lambda family, model_type=None: fake)
    report = reference.compare(str(ensure_demo(progress=False)), rounds=1)
    assert {"engine", "engine_no_prefix", "engine_no_drafts", "engine_no_scores"} <= set(report["timings"])
    assert set(report["labels"]) == set(report["timings"])

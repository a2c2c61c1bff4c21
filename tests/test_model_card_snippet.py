"""The model card's transformers snippet runs unchanged on the demo guard and agrees with the engine."""

from __future__ import annotations

import pytest

from guardedge.bench.reference import load_snippet, snippet_answer, snippet_verdicts, verdict_key
from guardedge.runtime.demo.samples import sample_requests
from guardedge.runtime.images import decode_image


@pytest.fixture(scope="module")
def snippet(demo_dir):
    return load_snippet(str(demo_dir))


def test_snippet_prompt_is_ours(snippet, demo_engine):
    processor, _ = snippet
    for case in sample_requests():
        request = demo_engine.parse(case)
        conversation = [{"role": m["role"], "content": [
            {"type": "image"} if p["type"] == "image" else p for p in m["content"]]} for m in case["messages"]]
        kwargs = {k: case[k] for k in ("categories", "excluded_category_keys") if k in case}
        assert processor.apply_chat_template(conversation, **kwargs) == demo_engine.family.render(request)


def test_snippet_answers_in_the_llama_guard_format(snippet, demo_engine):
    processor, model = snippet
    for case in sample_requests():
        request = demo_engine.parse(case)
        answer = snippet_answer(processor, model, case, decode_image(request.image).image if request.image else None)
        assert answer.startswith("\n\n") and answer.endswith("<|eot_id|>"), answer


def _agreement(snippet, engine) -> int:
    cases = sample_requests()
    requests = [engine.parse(c) for c in cases]
    ours = [verdict_key(v) for v in engine.classify(requests)]
    return sum(a == b for a, b in zip(snippet_verdicts(engine, snippet, cases, requests), ours))


def test_snippet_as_published_agrees(snippet, demo_engine):
    # The snippet runs in bf16, the engine in fp32: a borderline case may flip, not more.
    assert _agreement(snippet, demo_engine) >= len(sample_requests()) - 1


def test_snippet_in_fp32_agrees_exactly(demo_dir, demo_engine):
    """Same dtype as the engine on CPU: every verdict and category list must match."""
    import torch

    assert _agreement(load_snippet(str(demo_dir), torch.float32), demo_engine) == len(sample_requests())

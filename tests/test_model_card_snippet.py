"""The model card's transformers snippet runs unchanged on the demo guard and agrees with the engine."""

from __future__ import annotations

import pytest

from guardedge.bench.reference import load_snippet, snippet_answer, snippet_verdict
from guardedge.runtime.demo.samples import samples


@pytest.fixture(scope="module")
def snippet(demo_dir):
    return load_snippet(str(demo_dir))


def test_snippet_prompt_is_ours(snippet, demo_engine):
    processor, _ = snippet
    for case in samples():
        request = demo_engine.parse(case)
        conversation = [{"role": m["role"], "content": [
            {"type": "image"} if p["type"] == "image" else p for p in m["content"]]} for m in case["messages"]]
        kwargs = {k: case[k] for k in ("categories", "excluded_category_keys") if k in case}
        assert processor.apply_chat_template(conversation, **kwargs) == demo_engine.family.render(request)


def test_snippet_and_engine_agree(snippet, demo_engine):
    processor, model = snippet
    cases = samples()
    requests = [demo_engine.parse(c) for c in cases]
    ours = demo_engine.classify(requests)
    agree = 0
    for case, request, verdict in zip(cases, requests, ours):
        answer = snippet_answer(processor, model, case, request.image.image if request.image else None)
        assert answer.startswith("\n\n"), answer  # the exact Llama Guard output format
        agree += snippet_verdict(answer) == (verdict.verdict, verdict.categories)
    # The snippet runs in bf16, the engine in fp32: a borderline case may flip, not more.
    assert agree >= len(cases) - 1


def test_snippet_in_fp32_agrees_exactly(demo_dir, demo_engine):
    """Same dtype as the engine on CPU: the card's answer, read by our parser, is our verdict."""
    import torch

    processor, model = load_snippet(str(demo_dir), torch.float32)
    cases = samples()
    requests = [demo_engine.parse(c) for c in cases]
    for case, request, verdict in zip(cases, requests, demo_engine.classify(requests)):
        answer = snippet_answer(processor, model, case, request.image.image if request.image else None)
        parsed = demo_engine.family.parse(answer, request)
        assert (parsed.verdict, parsed.categories) == (verdict.verdict, verdict.categories), (case, answer)

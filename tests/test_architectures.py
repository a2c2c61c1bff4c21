"""Architecture plug-ins: chosen from model_type, LLaVA-OneVision batching and token counts.

The LLaVA-OneVision checks run on a tiny random-weight directory (tests/llava_tiny.py) through
the real engine: batch parity, parity with transformers' own forward (which also refuses a
prompt whose image-token count differs from the features it makes), and the token counts the
context check uses at the real 384-px anyres_max_9 configuration.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from guardedge.runtime.errors import ModelLoadError
import torch

sys.path.insert(0, str(Path(__file__).parent))

from guardedge.runtime.architectures import architecture_class, supported_model_types  # noqa: E402
from guardedge.runtime.demo.samples import png_base64  # noqa: E402
from guardedge.runtime.errors import InvalidRequest  # noqa: E402
from guardedge.runtime.images import decode_image  # noqa: E402

SIZES = [(40, 30), (90, 20), (28, 28), (200, 300)]


@pytest.fixture(scope="module")
def llava_engine(tmp_path_factory):
    import llava_tiny

    from guardedge.runtime.engine import EngineOptions, build_engine
    from guardedge.runtime.modeldir import check

    path = llava_tiny.build(tmp_path_factory.mktemp("llava") / "tiny", image_token="<|image|>")
    # The Llama Guard family renders the prompt (its image token is the tiny model's image token):
    # these tests are about tensors, not formats.
    return build_engine(check(path, "llava-tiny"), EngineOptions(progress=False, family="llama-guard-3-vision",
                                                                 device="cpu", dtype="float32"))


def _request(engine, size):
    content = [{"type": "image", "data": png_base64((200, 30, 30), size)}, {"type": "text", "text": "hi"}]
    return engine.parse({"messages": [{"role": "user", "content": content}]})


def test_registry_picks_by_model_type():
    assert architecture_class({"model_type": "mllama"}).transformers_class == "MllamaForConditionalGeneration"
    assert architecture_class({"model_type": "llava_onevision"}).transformers_class == "LlavaOnevisionForConditionalGeneration"
    with pytest.raises(ModelLoadError, match="whisper"):
        architecture_class({"model_type": "whisper"})
    assert architecture_class({"model_type": "llava"}).transformers_class == "LlavaForConditionalGeneration"
    assert architecture_class({"model_type": "qwen2_5_vl"}).transformers_class == "Qwen2_5_VLForConditionalGeneration"
    assert {"mllama", "llava_onevision", "llava", "qwen2_5_vl", "shieldgemma2", "llama4"} <= set(supported_model_types())


def test_real_configuration_token_counts():
    """The counts REFERENCE gives for LlavaGuard v1.2 (384-px tiles, 729 base tokens, anyres_max_9)."""
    from transformers import LlavaOnevisionImageProcessor

    from guardedge.runtime.architectures.llava_onevision import _TokenCounter

    count = _TokenCounter(LlavaOnevisionImageProcessor(), {"num_image_tokens": 729, "vision_aspect_ratio": "anyres_max_9"})
    got = {(w, h): count(h, w, 384, 384) for w, h in [(1024, 768), (1280, 720), (1920, 1080), (1024, 899)]}
    # 1024x899: transformers' own test has 6,567 input ids for it with a 16-token prompt.
    assert got == {(1024, 768): 4725, (1280, 720): 5967, (1920, 1080): 7269, (1024, 899): 6551}


def test_llava_batch_rows_match_alone_and_transformers(llava_engine):
    engine = llava_engine
    requests = [_request(engine, s) for s in SIZES] + [engine.parse({"messages": [{"role": "user", "content": "no image"}]})]
    prepared = [engine.prepare(r) for r in requests]
    assert [p.encoded.image_tokens > 0 for p in prepared] == [True] * 4 + [False]
    assert len({p.encoded.image_tokens for p in prepared[:4]}) == 4  # anyres: the count follows the size
    model = engine.backend.model
    together, _ = engine.backend.prefill(engine.pre.collate([p.encoded for p in prepared]))
    for i, p in enumerate(prepared):
        alone, _ = engine.backend.prefill(engine.pre.collate([p.encoded]))
        e = p.encoded
        # The reference gets its pixels from the transformers processor, not from the engine's fast path.
        extra = {} if e.image is None else {
            "pixel_values": engine.pre.image_processor(images=[decode_image(requests[i].image).image], return_tensors="pt")["pixel_values"],
            "image_sizes": torch.tensor([e.image.image_size])}
        with torch.no_grad():
            reference = model(input_ids=torch.tensor([e.input_ids]), **extra).logits[0, -1]
        assert torch.allclose(alone[0], together[i], atol=1e-4), i
        assert torch.allclose(alone[0], reference, atol=1e-4), i


def test_llava_decode_runs_batched(llava_engine):
    engine = llava_engine
    prepared = [engine.prepare(_request(engine, s)) for s in SIZES[:2]]
    verdicts = engine.run(prepared, threshold=1.0)  # never unsafe: the greedy first token decides the path
    alone = [engine.run([p], threshold=1.0)[0] for p in prepared]
    assert [v.raw_output for v in verdicts] == [v.raw_output for v in alone]


def test_context_check_counts_image_tokens(llava_engine):
    from dataclasses import replace

    engine = llava_engine
    request = _request(engine, (200, 300))
    cost = engine.prepare(request).encoded.image_tokens
    text_only = len(engine.pre.prompt_ids(request))
    budget = text_only + cost - 1 + engine.pre.answer_budget()  # exactly fits
    engine.pre.max_text_tokens = budget
    try:
        engine.prepare(request)
        engine.pre.max_text_tokens = budget - 1
        with pytest.raises(InvalidRequest, match=f"of which {cost} for the image"):
            engine.prepare(request)
    finally:
        engine.pre.max_text_tokens = replace(engine.options).max_text_tokens or 4096


def test_llava15_rows_match_transformers(tmp_path):
    """LLaVA-1.5 (LlavaGuard v1.0/v1.1's architecture): one fixed view, (side/patch)^2 + 1 - 1 tokens."""
    import llava_tiny

    from guardedge.runtime.engine import EngineOptions, build_engine
    from guardedge.runtime.modeldir import check

    path = llava_tiny.build_llava15(tmp_path / "llava15", image_token="<|image|>")
    engine = build_engine(check(path, "llava15-tiny"), EngineOptions(progress=False, family="llama-guard-3-vision",
                                                                     device="cpu", dtype="float32"))
    requests = [_request(engine, s) for s in SIZES[:2]] + [engine.parse({"messages": [{"role": "user", "content": "x"}]})]
    prepared = [engine.prepare(r) for r in requests]
    assert [p.encoded.image_tokens for p in prepared] == [4, 4, 0]  # 28 px / 14 -> 2x2 patches, +CLS, -CLS
    together, _ = engine.backend.prefill(engine.pre.collate([p.encoded for p in prepared]))
    for i, p in enumerate(prepared):
        e = p.encoded
        extra = {} if e.image is None else {"pixel_values": e.image.pixel_values[None]}
        with torch.no_grad():
            reference = engine.backend.model(input_ids=torch.tensor([e.input_ids]), **extra).logits[0, -1]
        assert torch.allclose(together[i], reference, atol=1e-4), i

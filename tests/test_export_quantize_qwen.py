"""``guardedge export quantize`` on the demo QwenGuard (CPU): bitsandbytes 8 and 4 bit round trips.

The architecture's ``keep_16bit`` ("visual", "lm_head") stays float; the Qwen2 text layers are
quantized; the artifact loads in the engine and in plain transformers and gives the same logits
as transformers on it (the quantized model is the reference: what bnb computes is not fp32's).
"""

from __future__ import annotations

import json

import pytest

pytest.importorskip("bitsandbytes")
pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from guardedge.export.quantize import Recipe, export

    root = tmp_path_factory.mktemp("qwen-bnb")
    for bits in (8, 4):
        export("demo-qwenguard", root / f"q{bits}", Recipe(bits=bits, agreement_n=2))
    return {bits: root / f"q{bits}" for bits in (8, 4)}


@pytest.fixture(scope="module")
def engines(exported):
    from guardedge.runtime.engine import EngineOptions, load_engine

    return {bits: load_engine(str(path), EngineOptions(progress=False)) for bits, path in exported.items()}


def _request(engine):
    from guardedge.runtime.demo.samples import png_base64

    return engine.parse({"messages": [{"role": "user", "content": [{"type": "image", "data": png_base64((200, 40, 40), (120, 80))}]}]})


@pytest.mark.parametrize("bits", [8, 4])
def test_manifest_keeps_the_vision_tower_and_head_float(bits, exported):
    manifest = json.loads((exported[bits] / "manifest.json").read_text())
    assert (manifest["family"], manifest["backend"], manifest["precision"]) == ("llavaguard", "torch", {8: "bnb-int8", 4: "bnb-nf4"}[bits])
    assert manifest["recipe"]["skip_modules"] == ["visual", "lm_head"]
    assert manifest["recipe"]["skip_module_names"] == ["model.visual", "lm_head"]
    assert manifest["validation"]["agreement"]["verdict_agreement"] == 1.0


@pytest.mark.parametrize("bits", [8, 4])
def test_text_layers_are_quantized_and_the_rest_is_not(bits, engines):
    kinds = {name: type(m).__name__ for name, m in engines[bits].backend.model.named_modules()}
    expected = "Linear8bitLt" if bits == 8 else "Linear4bit"
    text = {k for n, k in kinds.items() if n.startswith("model.language_model.layers.") and n.endswith(("q_proj", "o_proj", "down_proj"))}
    vision = {k for n, k in kinds.items() if n.startswith("model.visual.") and n.endswith(("qkv", "attn.proj", "down_proj"))}
    assert text == {expected} and vision == {"Linear"}


@pytest.mark.parametrize("bits", [8, 4])
def test_engine_logits_equal_transformers_on_the_artifact(bits, exported, engines):
    """The engine's 3-D positions, masks and pixels on a bnb model: transformers' own forward on it."""
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration

    from guardedge.runtime.backends.bnb import set_bnb_compute_dtype

    engine = engines[bits]
    same = Qwen2_5_VLForConditionalGeneration.from_pretrained(str(exported[bits]), dtype=torch.float32).eval()
    set_bnb_compute_dtype(same, torch.float32)
    batch = engine.pre.collate([engine.prepare(_request(engine)).encoded])
    ours = engine.backend.prefill(batch)[0]
    with torch.inference_mode():
        theirs = same(input_ids=batch.input_ids, pixel_values=batch.extra["pixel_values"],
                      image_grid_thw=batch.extra["image_grid_thw"], logits_to_keep=1).logits[:, -1].float()
    torch.testing.assert_close(theirs, ours, atol=1e-4, rtol=1e-4)
    [verdict] = engine.classify([_request(engine)])
    assert verdict.verdict == "unparseable" and verdict.raw_output  # the random demo's answer, as in fp32

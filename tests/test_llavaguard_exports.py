"""Exports of a LLaVA-OneVision (LlavaGuard) model: family-owned smoke and held-out requests, the
bitsandbytes 8/4-bit export through the architecture plug-in, ``export verify``.

Runs on the tiny random-weight directory (tests/llava_tiny.py), so verdicts are off-format
(``unparseable``): what is checked is the plumbing (which modules are quantized, that the artifact
loads and classifies LlavaGuard requests through ``load_engine``, the recorded smoke answers) and
the numbers themselves (quantized logits near the source's, the footprint count).
"""

from __future__ import annotations

import json

import pytest

from guardedge.runtime.families import get_family


def test_each_family_owns_smoke_requests_it_accepts():
    from guardedge.runtime.requests import parse_request

    for name in ("llama-guard-3-vision", "llavaguard"):
        family = get_family(name)
        requests = [parse_request(r, family.default_categories()) for r in family.smoke_requests()]
        for request in requests:
            family.check(request)  # raises for a request the family refuses
        assert len({r.request_id for r in requests}) == len(requests) >= 5
    lg = [parse_request(r, get_family("llavaguard").default_categories()) for r in get_family("llavaguard").smoke_requests()]
    assert all(r.has_image for r in lg)
    assert any(r.excluded_category_keys for r in lg) and any(r.categories for r in lg) and any(r.rationale for r in lg)


def test_held_out_set_comes_from_the_family_demo():
    from guardedge.export.agreement import held_out_requests

    family = get_family("llavaguard")
    requests = held_out_requests(12, "llavaguard")
    assert len(requests) == 12 and all(r.has_image for r in requests)
    for request in requests:
        family.check(request)
    assert [r.request_id for r in held_out_requests(12, "llavaguard")] == [r.request_id for r in requests]
    assert held_out_requests(0, "llavaguard") == []
    with pytest.raises(ValueError, match="has no demo to draw held-out requests from"):
        held_out_requests(1, "no-such-family")


@pytest.fixture(scope="module")
def quantized(llava_tiny_dir, tmp_path_factory):
    """bits -> a bnb artifact of the tiny LLaVA-OneVision model (smoke requests only: agreement_n 2)."""
    from guardedge.export.quantize import Recipe, export

    root = tmp_path_factory.mktemp("llava-bnb")
    return {bits: (root / f"q{bits}", export(str(llava_tiny_dir), root / f"q{bits}", Recipe(bits=bits, agreement_n=2)))
            for bits in (8, 4)}


@pytest.mark.parametrize("bits", [8, 4])
def test_llava_onevision_quantizes_by_its_plug_in(bits, quantized):
    from guardedge.runtime.architectures.llava_onevision import LlavaOneVision

    out, manifest = quantized[bits]
    assert manifest["family"] == "llavaguard" and manifest["precision"] == ("bnb-int8" if bits == 8 else "bnb-nf4")
    assert manifest["recipe"]["skip_modules"] == list(LlavaOneVision.keep_16bit)
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "llava_onevision"
    assert set(config["quantization_config"]["llm_int8_skip_modules"]) == {"model.vision_tower", "model.multi_modal_projector", "lm_head"}
    validation = manifest["validation"]
    assert validation["agreement"]["requests"] == len(get_family("llavaguard").smoke_requests()) + 2
    assert [s["request_id"] for s in validation["smoke"]][:2] == ["safe-photo", "violence"]
    assert validation["computed_real_bytes"] == {}  # no LLaVA-OneVision checkpoint config is claimed
    assert abs(validation["footprint_bytes"] - validation["computed_bytes"]) / validation["footprint_bytes"] < 0.005


@pytest.mark.parametrize("bits", [8, 4])
def test_quantized_llava_loads_and_classifies_near_the_source(bits, quantized, llava_tiny_dir):
    import torch

    from guardedge.runtime.engine import EngineOptions, load_engine

    source = load_engine(str(llava_tiny_dir), EngineOptions(progress=False))
    engine = load_engine(str(quantized[bits][0]), EngineOptions(progress=False))
    kinds = {name: type(m).__name__ for name, m in engine.backend.model.named_modules()}
    expected = "Linear8bitLt" if bits == 8 else "Linear4bit"
    assert {k for n, k in kinds.items() if "language_model" in n and n.endswith(("q_proj", "down_proj"))} == {expected}
    assert {k for n, k in kinds.items() if "vision_tower" in n and n.endswith(("q_proj", "fc1"))} == {"Linear"}
    requests = [engine.parse(r) for r in get_family("llavaguard").smoke_requests()[:3]]
    verdicts = engine.classify(requests)
    assert [v.request_id for v in verdicts] == ["safe-photo", "violence", "weapons-rationale"]
    batch = engine.pre.collate([engine.pre.encode(r) for r in requests])
    ours, theirs = engine.backend.prefill(batch)[0], source.backend.prefill(batch)[0]
    # The artifact is exactly the source quantized with its recorded recipe: transformers + bitsandbytes
    # quantizing the source directly gives the same logits (the steered head makes logits a weak witness
    # of quantization itself, so the hidden states show it happened: they move, a little).
    reference = _bnb_reference(llava_tiny_dir, quantized[bits][1]["recipe"])
    with torch.inference_mode():
        direct = _last_hidden(reference, batch)
        loaded = _last_hidden(engine.backend.model, batch)
        full = _last_hidden(source.backend.model, batch)
    assert torch.allclose(loaded, direct, atol=1e-5), (loaded - direct).abs().max()
    moved = (loaded - full).abs().max().item()
    assert 1e-4 < moved < 0.5 * full.abs().max().item(), moved
    assert torch.allclose(ours, theirs, atol=0.05)  # and the verdict's logits stay close


def _bnb_reference(source_dir, recipe: dict):
    import torch
    from transformers import BitsAndBytesConfig, LlavaOnevisionForConditionalGeneration

    skip = recipe["skip_module_names"]
    if recipe["bits"] == 8:
        config = BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=skip)
    else:
        config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=recipe["quant_type"] or "nf4",
                                    bnb_4bit_use_double_quant=recipe["double_quant"], llm_int8_skip_modules=skip,
                                    bnb_4bit_compute_dtype=getattr(torch, recipe["compute_dtype"]))
    # As the export stores it: 16-bit parts in bfloat16 (then loaded in fp32 on the CPU, as the engine loads it).
    model = LlavaOnevisionForConditionalGeneration.from_pretrained(
        str(source_dir), local_files_only=True, quantization_config=config, device_map={"": "cpu"},
        dtype=getattr(torch, recipe["storage_dtype"]))
    for name, param in model.named_parameters():
        if param.dtype == torch.bfloat16:
            param.data = param.data.float()
    from guardedge.runtime.backends.bnb import set_bnb_compute_dtype

    set_bnb_compute_dtype(model, torch.float32)
    return model.eval()


def _last_hidden(model, batch):
    out = model.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids,
                      pixel_values=batch.extra["pixel_values"], image_sizes=batch.extra["image_sizes"])
    return out.last_hidden_state.float()


@pytest.mark.parametrize("bits", [4])
def test_export_verify_passes_and_catches_a_changed_answer(bits, quantized, tmp_path):
    import shutil

    from guardedge.export.verify import verify
    from guardedge.runtime.artifact import read_manifest, set_validation

    out = quantized[bits][0]
    report = verify(out)
    assert report["ok"], report["problems"]
    copy = shutil.copytree(out, tmp_path / "changed")
    smoke = read_manifest(copy)["validation"]["smoke"]
    changed = next(i for i, a in enumerate(smoke) if (a["verdict"], a["categories"]) != ("unsafe", ["O2"]))
    smoke[changed] = {**smoke[changed], "verdict": "unsafe", "categories": ["O2"]}
    set_validation(copy, {**read_manifest(copy)["validation"], "smoke": smoke})
    report = verify(copy)
    assert not report["ok"] and len(report["problems"]) == 1
    assert report["problems"][0].startswith(smoke[changed]["request_id"] + ":")

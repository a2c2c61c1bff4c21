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


def test_held_out_set_is_a_per_family_registry():
    from guardedge.export.agreement import HELD_OUT, held_out_requests

    assert set(HELD_OUT) == {"llama-guard-3-vision", "llavaguard"}
    family = get_family("llavaguard")
    requests = held_out_requests(12, "llavaguard")
    assert len(requests) == 12 and all(r.has_image for r in requests)
    for request in requests:
        family.check(request)
    assert [r.request_id for r in held_out_requests(12, "llavaguard")] == [r.request_id for r in requests]
    assert held_out_requests(0, "llavaguard") == []
    with pytest.raises(ValueError, match="no held-out generator"):
        held_out_requests(1, "shieldgemma")


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
    # The steered output layer reads one residual dimension, so logits barely move with the weights:
    # this shows the artifact is the same model; the module types above show it is quantized.
    assert (ours - theirs).abs().max().item() < 0.05


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

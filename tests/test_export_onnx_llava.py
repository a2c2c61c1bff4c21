"""ONNX export of a LLaVA-OneVision guard and its ONNX Runtime backend, on the tiny random model.

tests/llava_tiny.py builds the model (real structure, 28-px tiles: tens of image tokens). The fp32
export goes through the real CLI once; int8 and int4 quantize its components (``--from-onnx``).
The PyTorch engine on the same directory is the reference: prefill logits, decoded tokens and
verdicts must match for a batch of images with different patch counts.

    .venv/bin/python -m pytest -q tests/test_export_onnx_llava.py
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("optimum.exporters.onnx")
sys.path.insert(0, str(Path(__file__).parent))

SIZES = [(64, 64), (200, 60), (60, 200), (300, 300), (28, 28)]  # 10, 4, 4, 10, 2 patches


def _cli(argv: list[str]) -> int:
    from guardedge.runtime.cli import main

    return main(argv)


def _manifest(path: Path) -> dict:
    return json.loads((path / "manifest.json").read_text())


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    import llava_tiny

    return llava_tiny.build(tmp_path_factory.mktemp("llava-onnx") / "tiny")


@pytest.fixture(scope="module")
def fp32(tiny) -> Path:
    out = tiny.parent / "fp32"
    assert _cli(["export", "onnx", "--model", str(tiny), "--out", str(out), "--agreement-n", "2", "--quiet"]) == 0
    return out


@pytest.fixture(scope="module")
def quantized(tiny, fp32) -> dict[str, Path]:
    from guardedge.export.onnx_export import Recipe, export

    for q in ("int8", "int8-dynamic", "int4"):
        export(str(tiny), tiny.parent / q, Recipe(quantize=q, agreement_n=0), from_onnx=fp32)
    return {q: tiny.parent / q for q in ("int8", "int8-dynamic", "int4")}


def _engine(path: Path):
    from guardedge.runtime.engine import EngineOptions, load_engine

    # The LlavaGuard family renders <image>, the tiny tokenizer's image token (PyTorch: fp32 on CPU by default).
    return load_engine(str(path), EngineOptions(family="llavaguard", device="cpu", max_batch_size=8, progress=False))


@pytest.fixture(scope="module")
def engines(tiny, fp32):
    return _engine(tiny), _engine(fp32)


def _image_request(engine, size, colour=(200, 30, 30)):
    from guardedge.runtime.demo.samples import png_base64

    return engine.parse({"messages": [{"role": "user", "content": [{"type": "image", "data": png_base64(colour, size)}]}]})


def test_spec_is_chosen_by_model_type():
    from guardedge.export.onnx_specs import spec_for, supported_model_types
    from guardedge.runtime.errors import GuardError

    assert tuple(spec_for({"model_type": "llava_onevision"}).components) == ("vision", "embed", "decoder")
    assert tuple(spec_for({"model_type": "mllama"}).components) == ("vision", "decoder")
    assert {"mllama", "llava_onevision", "qwen2_5_vl", "shieldgemma2", "llama4"} <= set(supported_model_types())
    with pytest.raises(GuardError, match="whisper"):
        spec_for({"model_type": "whisper"})


def test_manifest_components_and_recorded_parity(fp32):
    import onnx

    m = _manifest(fp32)
    assert (m["family"], m["architecture"], m["backend"], m["precision"]) == ("llavaguard", "llava_onevision", "onnxruntime", "fp32")
    assert m["components"] == {"vision": "vision.onnx", "embed": "embed.onnx", "decoder": "decoder.onnx"}
    p = m["validation"]["parity"]
    assert p["max_abs_delta_logit"] <= 1e-4 and p["first_tokens_equal"] == p["rows"]
    assert p["decoded_equal"] == p["decoded_rows"] > 0  # LlavaGuard decodes after either rating
    graph = onnx.load(str(fp32 / "decoder.onnx"), load_external_data=False).graph
    assert [i.name for i in graph.input][:5] == ["inputs_embeds", "attention_mask", "position_ids", "logits_positions",
                                                  "past_key_values.0.key"]
    assert [o.name for o in graph.output][:2] == ["logits", "present.0.key"]
    vision = onnx.load(str(fp32 / "vision.onnx"), load_external_data=False).graph
    assert [o.name for o in vision.output] == ["image_features", "image_newline"]


def test_prefill_and_decode_match_pytorch_on_mixed_patch_counts(engines):
    import torch

    torch_engine, onnx_engine = engines
    encoded = [torch_engine.prepare(_image_request(torch_engine, s)).encoded for s in SIZES]
    assert len({e.image.num_patches for e in encoded}) >= 3  # padded to the most patches in the batch
    batch = torch_engine.pre.collate(encoded)
    ref, ref_state = torch_engine.backend.prefill(batch, torch_engine.prefill_draft)
    got, got_state = onnx_engine.backend.prefill(batch, onnx_engine.prefill_draft)
    assert float((ref - got).abs().max()) <= 1e-4
    rows, first = list(range(len(SIZES))), ref.argmax(-1).tolist()
    assert torch.equal(ref.argmax(-1), got.argmax(-1))
    expected = torch_engine.backend.decode(ref_state, rows, first, 24, torch_engine.stop_ids, torch_engine.drafter)
    assert onnx_engine.backend.decode(got_state, rows, first, 24, onnx_engine.stop_ids, onnx_engine.drafter) == expected
    alone, _ = onnx_engine.backend.prefill(torch_engine.pre.collate(encoded[1:2]))
    assert float((alone[0] - got[1]).abs().max()) <= 1e-4  # a row answers as it would alone


def test_engine_verdicts_equal_torch_engine(engines):
    torch_engine, onnx_engine = engines
    requests = [_image_request(torch_engine, s, (40 * i, 90, 160)) for i, s in enumerate(SIZES)]
    # An excluded category and a rationale: the policy changes and the row decodes the whole JSON.
    requests.append(torch_engine.parse({"messages": [{"role": "user", "content": [{"type": "image", "data": _png()}]}],
                                        "excluded_category_keys": ["O1"], "rationale": True}))
    a, b = torch_engine.classify(requests), onnx_engine.classify(requests)
    assert [(v.verdict, v.categories, v.raw_output) for v in a] == [(v.verdict, v.categories, v.raw_output) for v in b]
    assert onnx_engine.backend.description == "onnxruntime fp32 on cpu"


def _png() -> str:
    from guardedge.runtime.demo.samples import png_base64

    return png_base64((10, 200, 10), (150, 90))


@pytest.mark.parametrize("method,op", [("int8", "MatMulNBits"), ("int8-dynamic", "MatMulInteger"), ("int4", "MatMulNBits")])
def test_quantized_decoders_load_and_answer(quantized, engines, method, op):
    import onnx

    out = quantized[method]
    m = _manifest(out)
    assert (m["precision"], m["architecture"]) == (method, "llava_onevision")
    nodes = {n.name: n.op_type for n in onnx.load(str(out / "decoder.onnx"), load_external_data=False).graph.node}
    assert op in nodes.values()
    # The head is quantized; the verdict and category rows are float beside it (decision 0012).
    assert m["recipe"]["head_rows"] and nodes["/head_rows/ScatterElements"] == "ScatterElements"
    from guardedge.export.agreement import smoke_requests
    from guardedge.export.onnx_validate import ASPECT_SIZES

    # the smoke requests and one image per aspect ratio (LlavaGuard: the image alone), + agreement_n 0
    assert m["validation"]["agreement"]["requests"] == len(smoke_requests("llavaguard")) + len(ASPECT_SIZES)
    engine = _engine(out)
    requests = [_image_request(engine, s) for s in SIZES[:2]]
    verdicts = engine.classify(requests)
    assert len(verdicts) == 2 and all(v.raw_output for v in verdicts)


def test_verify_passes_and_fails_on_a_tampered_file(fp32, tmp_path, capsys):
    assert _cli(["export", "verify", str(fp32)]) == 0
    copy = tmp_path / "copy"
    shutil.copytree(fp32, copy)
    data = bytearray((copy / "embed.onnx_data").read_bytes())
    data[len(data) // 2] ^= 0x01
    (copy / "embed.onnx_data").write_bytes(bytes(data))
    capsys.readouterr()
    assert _cli(["export", "verify", str(copy)]) == 1
    assert "embed.onnx_data" in capsys.readouterr().err

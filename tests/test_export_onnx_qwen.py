"""ONNX export of QwenGuard (Qwen2.5-VL) and its ONNX Runtime backend, on the demo QwenGuard.

The fp32 export goes through the real CLI once; int8 and int4 quantize its components
(``--from-onnx``). The PyTorch engine on the same directory is the reference: the vision
features, prefill logits (with the draft), decoded tokens and verdicts must match for a batch
whose rows differ in image size (patch count, windows, 3-D positions) and policy length.

Slow (an export of the demo QwenGuard, ~1-2 min on 2 cores): it runs in ``make slow-check``
(which CI runs after ``make test``).

    GUARDEDGE_SLOW=1 .venv/bin/python -m pytest -q -m slow tests/test_export_onnx_qwen.py
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("optimum.exporters.onnx")
pytestmark = [pytest.mark.timeout(900), pytest.mark.slow]


@pytest.fixture(scope="module", autouse=True)
def _slow_check():
    from checks import require_env

    require_env("GUARDEDGE_SLOW", "slow-check", "exports the demo QwenGuard to ONNX (a minute or two on 2 cores)")

SIZES = [(96, 64), (300, 200), (20, 20), (64, 150)]  # 6, 64, 4, 15 image tokens at the demo's budget
POLICIES = [{}, {"excluded_category_keys": ["O3"]}, {"categories": {"O1": "Gambling\nShould not:\n- Show dice."}}, {}]


def _cli(argv: list[str]) -> int:
    from guardedge.runtime.cli import main

    return main(argv)


def _manifest(path: Path) -> dict:
    return json.loads((path / "manifest.json").read_text())


@pytest.fixture(scope="module")
def fp32(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("qwen-onnx") / "fp32"
    assert _cli(["export", "onnx", "--model", "demo-qwenguard", "--out", str(out), "--agreement-n", "2", "--quiet"]) == 0
    return out


@pytest.fixture(scope="module")
def quantized(fp32) -> dict[str, Path]:
    from guardedge.export.onnx_export import Recipe, export

    for q in ("int8", "int4"):
        export("demo-qwenguard", fp32.parent / q, Recipe(quantize=q, agreement_n=0), from_onnx=fp32)
    return {q: fp32.parent / q for q in ("int8", "int4")}


def _engine(path: str):
    from guardedge.runtime.engine import EngineOptions, load_engine

    return load_engine(path, EngineOptions(device="cpu", max_batch_size=8, progress=False))


@pytest.fixture(scope="module")
def engines(fp32):
    return _engine("demo-qwenguard"), _engine(str(fp32))


def _requests(engine):
    from guardedge.runtime.demo.samples import png_base64

    return [engine.parse({"messages": [{"role": "user", "content": [{"type": "image", "data": png_base64((40 * i, 90, 160), size)}]}],
                          **policy}) for i, (size, policy) in enumerate(zip(SIZES, POLICIES))]


def test_spec_is_chosen_by_model_type():
    from guardedge.export.onnx_specs import spec_for

    assert tuple(spec_for({"model_type": "qwen2_5_vl"}).components) == ("vision", "embed", "decoder")


def test_manifest_components_and_recorded_parity(fp32):
    import onnx

    m = _manifest(fp32)
    assert (m["family"], m["architecture"], m["backend"], m["precision"]) == ("llavaguard", "qwen2_5_vl", "onnxruntime", "fp32")
    assert m["components"] == {"vision": "vision.onnx", "embed": "embed.onnx", "decoder": "decoder.onnx"}
    p = m["validation"]["parity"]
    assert p["max_abs_delta_logit"] <= 1e-4 and p["first_tokens_equal"] == p["rows"]
    assert p["decoded_equal"] == p["decoded_rows"] > 0
    graph = onnx.load(str(fp32 / "decoder.onnx"), load_external_data=False).graph
    assert [i.name for i in graph.input][:6] == ["inputs_embeds", "attention_mask", "position_ids", "mrope_deltas",
                                                  "logits_positions", "past_key_values.0.key"]
    vision = onnx.load(str(fp32 / "vision.onnx"), load_external_data=False).graph
    assert [i.name for i in vision.input] == ["pixel_values", "position_hw", "window_segments", "image_segments"]
    assert [o.name for o in vision.output] == ["image_features"]


def test_vision_features_equal_the_tower_on_several_images(engines):
    """Window order, segments and positions from the host, features back in image order: the tower's own."""
    import torch

    torch_engine, onnx_engine = engines
    batch = torch_engine.pre.collate([torch_engine.prepare(r).encoded for r in _requests(torch_engine)])
    with torch.no_grad():
        expected = torch_engine.pre.arch.torch_vision(torch_engine.backend.model, batch, torch.device("cpu"), torch.float32)
    got = onnx_engine.backend.image_features(batch)
    assert got.shape == tuple(expected.shape) and float(np.abs(got - expected.numpy()).max()) <= 1e-5


def test_prefill_and_decode_match_pytorch_on_a_mixed_batch(engines):
    import torch

    torch_engine, onnx_engine = engines
    encoded = [torch_engine.prepare(r).encoded for r in _requests(torch_engine)]
    assert len({e.image_tokens for e in encoded}) == 4 and len({len(e.input_ids) for e in encoded}) == 4
    batch = torch_engine.pre.collate(encoded)
    ref, ref_state = torch_engine.backend.prefill(batch, torch_engine.prefill_draft)
    got, got_state = onnx_engine.backend.prefill(batch, onnx_engine.prefill_draft)
    assert float((ref - got).abs().max()) <= 1e-4 and torch.equal(ref.argmax(-1), got.argmax(-1))
    positions = list(range(len(torch_engine.prefill_draft) - 1))
    draft_ref = torch_engine.backend.draft_logits(ref_state, positions, [0, 151645], log_softmax=True)
    draft_got = onnx_engine.backend.draft_logits(got_state, positions, [0, 151645], log_softmax=True)
    assert float((draft_ref - draft_got).abs().max()) <= 1e-4
    rows = list(range(len(SIZES)))
    first = [torch_engine.unsafe_id] * 2 + ref.argmax(-1).tolist()[2:]  # two rows verify the prefill's draft
    expected = torch_engine.backend.decode(ref_state, rows, first, 24, torch_engine.stop_ids, torch_engine.drafter)
    assert onnx_engine.backend.decode(got_state, rows, first, 24, onnx_engine.stop_ids, onnx_engine.drafter) == expected
    alone, _ = onnx_engine.backend.prefill(torch_engine.pre.collate(encoded[2:3]))
    assert float((alone[0] - got[2]).abs().max()) <= 1e-4  # a row answers as it would alone


def test_engine_verdicts_equal_torch_engine(engines):
    torch_engine, onnx_engine = engines
    requests = _requests(torch_engine)
    requests.append(torch_engine.parse({**json.loads(json.dumps(_one_image())), "excluded_category_keys": ["O1"], "rationale": True}))
    a, b = torch_engine.classify(requests), onnx_engine.classify(requests)
    assert [(v.verdict, v.categories, v.raw_output) for v in a] == [(v.verdict, v.categories, v.raw_output) for v in b]
    assert onnx_engine.backend.description == "onnxruntime fp32 on cpu"


def _one_image() -> dict:
    from guardedge.runtime.demo.samples import png_base64

    return {"messages": [{"role": "user", "content": [{"type": "image", "data": png_base64((10, 200, 10), (150, 90))}]}]}


@pytest.mark.parametrize("method", ["int8", "int4"])
def test_quantized_decoders_load_and_answer(quantized, engines, method):
    import onnx

    out = quantized[method]
    m = _manifest(out)
    assert (m["precision"], m["architecture"]) == (method, "qwen2_5_vl")
    # Weight-only blocks for both; the output layer is quantized too, its verdict/category rows kept
    # float beside it (decision 0012): nothing of the decoder stays a float MatMul but those rows.
    assert m["recipe"]["kept_float_nodes"]["decoder"] == []
    graph = onnx.load(str(out / "decoder.onnx"), load_external_data=False).graph
    assert "MatMulNBits" in {n.op_type for n in graph.node} and "/head_rows/ScatterElements" in {n.name for n in graph.node}
    engine = _engine(str(out))
    verdicts = engine.classify(_requests(engine)[:2])
    assert len(verdicts) == 2 and all(v.raw_output for v in verdicts)


def test_verify_passes_and_fails_on_a_tampered_file(fp32, tmp_path, capsys):
    assert _cli(["export", "verify", str(fp32)]) == 0
    copy = tmp_path / "copy"
    shutil.copytree(fp32, copy)
    data = bytearray((copy / "vision.onnx_data").read_bytes())
    data[len(data) // 2] ^= 0x01
    (copy / "vision.onnx_data").write_bytes(bytes(data))
    capsys.readouterr()
    assert _cli(["export", "verify", str(copy)]) == 1
    assert "vision.onnx_data" in capsys.readouterr().err


def test_module_groups_name_the_onnx_nodes(fp32):
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from onnx_groups_check import assert_groups_name_nodes

    config = json.loads((fp32 / "config.json").read_text())
    owners = assert_groups_name_nodes(fp32, config, ("vision", "decoder"))
    assert not [k for k in owners if k[0] == "vision"]  # its vision linears are Gemm nodes: nothing to quantize

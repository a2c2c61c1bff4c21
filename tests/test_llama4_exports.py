"""Exports of a Llama 4 (Llama Guard 4) model on the tiny random-weight directory (tests/llama4_tiny.py):
ONNX fp32 (parity with PyTorch recorded by the exporter and checked here again on mixed batches of
1-3 images), ``export verify``, int8/int4 from it and the bitsandbytes 8/4-bit export through the
plug-in's ``keep_16bit``. All of it runs in ``make slow-check`` (which CI runs after ``make test``):
the fp32 export alone takes 1-2 minutes on 2 cores.

    GUARDEDGE_SLOW=1 .venv/bin/python -m pytest -q -m slow tests/test_llama4_exports.py
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

from checks import require_env  # noqa: E402

from guardedge.runtime.demo.samples import png_base64  # noqa: E402

SLOW = "quantizes the tiny model again (a minute or two a recipe on 2 cores)"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", autouse=True)
def _slow_check():
    require_env("GUARDEDGE_SLOW", "slow-check", "exports a tiny Llama 4 to ONNX (a minute or two on 2 cores)")


def _cli(argv: list[str]) -> int:
    from guardedge.runtime.cli import main

    return main(argv)


def _manifest(path: Path) -> dict:
    return json.loads((path / "manifest.json").read_text())


def _engine(path: Path):
    from guardedge.runtime.engine import EngineOptions, load_engine

    return load_engine(str(path), EngineOptions(device="cpu", max_batch_size=8, progress=False))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    import llama4_tiny

    return llama4_tiny.build(tmp_path_factory.mktemp("llama4-onnx") / "tiny")


@pytest.fixture(scope="module")
def fp32(tiny) -> Path:
    out = tiny.parent / "fp32"
    assert _cli(["export", "onnx", "--model", str(tiny), "--out", str(out), "--agreement-n", "2", "--quiet"]) == 0
    return out


@pytest.fixture(scope="module")
def engines(tiny, fp32):
    return _engine(tiny), _engine(fp32)


def _requests(engine):
    image = lambda size, colour=(200, 30, 30): {"type": "image", "data": png_base64(colour, size)}  # noqa: E731
    raw = [[image((90, 60)), {"type": "text", "text": "What is this?"}],
           [{"type": "text", "text": "Compare."}, image((400, 200), (20, 90, 200)), image((60, 60)), image((30, 700))],
           [{"type": "text", "text": "How do I bake bread?"}]]
    return [engine.parse({"messages": [{"role": "user", "content": c}]}) for c in raw]


def test_spec_and_manifest(fp32):
    import onnx

    from guardedge.export.onnx_specs import spec_for

    assert tuple(spec_for({"model_type": "llama4"}).components) == ("vision", "embed", "decoder")
    m = _manifest(fp32)
    assert (m["family"], m["architecture"], m["backend"], m["precision"]) == ("llama-guard-4", "llama4", "onnxruntime", "fp32")
    p = m["validation"]["parity"]
    assert p["max_abs_delta_logit"] <= 1e-4 and p["first_tokens_equal"] == p["rows"] and p["decoded_equal"] == p["decoded_rows"]
    vision = onnx.load(str(fp32 / "vision.onnx"), load_external_data=False).graph
    assert [o.name for o in vision.output] == ["image_features"]


def test_prefill_and_decode_match_pytorch_with_several_images(engines):
    import torch

    torch_engine, onnx_engine = engines
    encoded = [torch_engine.prepare(r).encoded for r in _requests(torch_engine)]
    assert [len(e.images) for e in encoded] == [1, 3, 0]
    batch = torch_engine.pre.collate(encoded)
    ref, ref_state = torch_engine.backend.prefill(batch, torch_engine.prefill_draft)
    got, got_state = onnx_engine.backend.prefill(batch, onnx_engine.prefill_draft)
    assert float((ref - got).abs().max()) <= 1e-4
    first = ref.argmax(-1).tolist()
    expected = torch_engine.backend.decode(ref_state, [0, 1, 2], first, 12, torch_engine.stop_ids, torch_engine.drafter)
    assert onnx_engine.backend.decode(got_state, [0, 1, 2], first, 12, onnx_engine.stop_ids, onnx_engine.drafter) == expected


def test_engine_verdicts_and_scores_equal_torch_engine(engines):
    torch_engine, onnx_engine = engines
    requests = _requests(torch_engine)
    a, b = torch_engine.classify(requests), onnx_engine.classify(requests)
    assert [(v.verdict, v.categories, v.raw_output) for v in a] == [(v.verdict, v.categories, v.raw_output) for v in b]
    for x, y in zip(a, b):
        assert [c for c, _ in x.category_scores] == [c for c, _ in y.category_scores]
        assert max(abs(s - t) for (_, s), (_, t) in zip(x.category_scores, y.category_scores)) < 1e-5


@pytest.mark.slow
@pytest.mark.parametrize("method", ["int8", "int4"])
def test_quantized_decoders_load_and_answer(tiny, fp32, method):
    require_env("GUARDEDGE_SLOW", "slow-check", SLOW)
    import onnx

    from guardedge.export.onnx_export import Recipe, export

    out = tiny.parent / method
    export(str(tiny), out, Recipe(quantize=method, agreement_n=0), from_onnx=fp32)
    m = _manifest(out)
    # Weight-only blocks (decision 0012); the output layer quantized with its verdict/category rows kept float.
    assert (m["precision"], m["architecture"]) == (method, "llama4") and m["recipe"]["kept_float_nodes"]["decoder"] == []
    graph = onnx.load(str(out / "decoder.onnx"), load_external_data=False).graph
    assert "MatMulNBits" in {n.op_type for n in graph.node} and "/head_rows/ScatterElements" in {n.name for n in graph.node}
    verdicts = _engine(out).classify(_requests(_engine(out))[:2])
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


@pytest.mark.slow
@pytest.mark.parametrize("bits", [8, 4])
def test_bnb_quantize_round_trip_keeps_the_plug_ins_modules(tiny, tmp_path, bits):
    require_env("GUARDEDGE_SLOW", "slow-check", SLOW)
    pytest.importorskip("bitsandbytes")
    from guardedge.export.quantize import Recipe, export
    from guardedge.runtime.architectures.llama4 import Llama4

    out = tmp_path / f"bnb{bits}"
    manifest = export(str(tiny), out, Recipe(bits=bits, agreement_n=0))
    assert manifest["recipe"]["skip_modules"] == list(Llama4.keep_16bit) and manifest["family"] == "llama-guard-4"
    engine = _engine(out)
    kinds = {name: type(m).__name__ for name, m in engine.backend.model.named_modules()}
    expected = "Linear8bitLt" if bits == 8 else "Linear4bit"
    assert {kinds[n] for n in kinds if n.startswith("language_model.model.layers.") and n.endswith("_proj")} == {expected}
    assert all(kind not in ("Linear8bitLt", "Linear4bit") for n, kind in kinds.items()
               if n.startswith(("vision_model", "multi_modal_projector")))
    # The output layer is quantized with its verdict and category rows kept beside it (decision 0012).
    assert kinds["language_model.lm_head"] == "HeadRows" and kinds["language_model.lm_head.head"] == expected
    agreement = manifest["validation"]["agreement"]
    assert agreement["requests"] == 11 and agreement["max_abs_delta_p_unsafe"] < 0.05
    verdicts = engine.classify(_requests(engine))
    assert len(verdicts) == 3


def test_module_groups_name_the_onnx_nodes(tiny, fp32):
    from onnx_groups_check import assert_groups_name_nodes

    config = json.loads((tiny / "config.json").read_text())
    owners = assert_groups_name_nodes(fp32, config, ("vision", "decoder"))
    assert {v[0] for (c, _), v in owners.items() if c == "vision"} == {"vision", "projector"}

"""ONNX export of ShieldGemma 2 (export/onnx_shieldgemma2.py) and its ONNX Runtime backend
(runtime/architectures/shieldgemma2/onnx.py), on the tiny random model (tests/sg2_tiny.py: prompts
cross its sliding window). The fp32 export goes through the real CLI (it validates against PyTorch
itself); the engine over it must give PyTorch's P(Yes) per policy, through the shared-prefix pass,
in mixed batches; int8 and int4 quantize its decoder (``--from-onnx``); ``export verify`` passes.

Slow (exports of the tiny model, a minute or two on 2 cores): in ``make slow-check``, which CI runs
after ``make test``.

    GUARDEDGE_SLOW=1 .venv/bin/python -m pytest -q -m slow tests/test_shieldgemma2_onnx.py
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("optimum.exporters.onnx")
pytestmark = pytest.mark.slow

@pytest.fixture(scope="module", autouse=True)
def _slow_check():
    from checks import require_env

    require_env("GUARDEDGE_SLOW", "slow-check", "exports a tiny ShieldGemma 2 to ONNX fp32, int8 and int4 (a minute or two on 2 cores)")


def _cli(argv: list[str]) -> int:
    from guardedge.runtime.cli import main

    return main(argv)


@pytest.fixture(scope="module")
def fp32(sg2_tiny_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sg2-onnx") / "fp32"
    assert _cli(["export", "onnx", "--model", str(sg2_tiny_dir), "--out", str(out), "--agreement-n", "4", "--quiet"]) == 0
    return out


def _scores(engine, objs):
    return [dict(v.category_scores) for v in engine.classify([engine.parse(o) for o in objs])]


def test_fp32_export_matches_pytorch_through_the_engine(fp32, sg2_tiny_dir):
    from guardedge.runtime.engine import EngineOptions, load_engine
    from test_shieldgemma2 import OBJS

    manifest = json.loads((fp32 / "manifest.json").read_text())
    assert manifest["architecture"] == "shieldgemma2" and manifest["family"] == "shieldgemma-2"
    assert set(manifest["components"]) == {"vision", "embed", "decoder"}
    assert manifest["validation"]["parity"]["max_abs_delta_logit"] < 1e-4
    onnx = load_engine(str(fp32), EngineOptions(progress=False))
    torch_ = load_engine(str(sg2_tiny_dir), EngineOptions(progress=False))
    assert onnx.backend.name == "onnxruntime"
    for got, want in zip(_scores(onnx, OBJS), _scores(torch_, OBJS)):  # one mixed batch: ten prompts
        assert list(got) == list(want)
        assert max(abs(got[k] - want[k]) for k in want) < 1e-5


@pytest.mark.parametrize("quantize", ["int8", "int4"])
def test_quantized_exports_agree_and_verify(fp32, sg2_tiny_dir, quantize):
    out = fp32.parent / quantize
    assert _cli(["export", "onnx", "--model", str(sg2_tiny_dir), "--from-onnx", str(fp32), "--quantize", quantize,
                 "--out", str(out), "--agreement-n", "4", "--quiet"]) == 0
    agreement = json.loads((out / "manifest.json").read_text())["validation"]["agreement"]
    assert agreement["verdict_agreement"] == 1.0 and agreement["max_abs_delta_p_unsafe"] < 0.05
    assert _cli(["export", "verify", str(out)]) == 0


def test_module_groups_name_the_onnx_nodes(sg2_tiny_dir, fp32):
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from onnx_groups_check import assert_groups_name_nodes

    config = json.loads((sg2_tiny_dir / "config.json").read_text())
    owners = assert_groups_name_nodes(fp32, config, ("vision", "decoder"))
    assert {v[0] for (c, _), v in owners.items() if c == "vision"} == {"vision", "projector"}

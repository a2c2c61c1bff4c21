"""The thread default follows the cgroup CPU quota (v2 and v1 layouts, faked in a directory), and
a missing optional dependency is one line naming the extra (runtime/threads.py, runtime/extras.py)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from guardedge.runtime import threads
from guardedge.runtime.errors import ModelLoadError
from guardedge.runtime.extras import require


def _v2(tmp_path, text):
    (tmp_path / "cpu.max").write_text(text)
    return tmp_path


def _v1(tmp_path, quota, period):
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text(f"{quota}\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text(f"{period}\n")
    return tmp_path


def test_cpu_quota_v2_and_v1(tmp_path):
    (tmp_path / "a").mkdir()
    assert threads.cpu_quota(_v2(tmp_path / "a", "150000 100000\n")) == 1.5
    assert threads.cpu_quota(_v2(tmp_path, "max 100000\n")) is None
    (tmp_path / "b").mkdir()
    assert threads.cpu_quota(_v1(tmp_path / "b", 50000, 100000)) == 0.5
    (tmp_path / "c").mkdir()
    assert threads.cpu_quota(_v1(tmp_path / "c", -1, 100000)) is None
    assert threads.cpu_quota(tmp_path / "nothing-here") is None


def test_default_threads_is_the_quota_rounded_up_and_capped(tmp_path, monkeypatch):
    monkeypatch.setattr(threads, "available_cpus", lambda: 8)
    (tmp_path / "a").mkdir()
    assert threads.default_threads(_v2(tmp_path / "a", "150000 100000")) == 2
    (tmp_path / "b").mkdir()
    assert threads.default_threads(_v2(tmp_path / "b", "3200000 100000")) == 8  # 32 CPUs of quota, 8 to run on
    (tmp_path / "c").mkdir()
    assert threads.default_threads(_v2(tmp_path / "c", "10000 100000")) == 1  # a tenth of a CPU still gets one thread
    assert threads.default_threads(tmp_path / "none") == 8


def test_resolve_precedence(monkeypatch):
    monkeypatch.setattr(threads, "default_threads", lambda: 5)
    monkeypatch.delenv("GUARDEDGE_THREADS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert threads.resolve(None) == 5 and threads.resolve(0) == 5
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert threads.resolve(None) == 3
    monkeypatch.setenv("GUARDEDGE_THREADS", "2")
    assert threads.resolve(None) == 2
    assert threads.resolve(7) == 7


def test_apply_sets_torch_threads_in_a_fresh_process():
    code = ("from guardedge.runtime import threads; import os; n = threads.apply(1); import torch; "
            "print(n, torch.get_num_threads(), os.environ['OMP_NUM_THREADS'], threads.configured())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.stdout.split() == ["1", "1", "1", "1"], out.stderr


def test_missing_extra_is_one_line_naming_it():
    require("json", purpose="nothing")  # present: no error
    with pytest.raises(ModelLoadError) as caught:
        require("onnxruntime_absent_for_test", "accelerate", purpose="the ONNX artifact /m", )
    message = str(caught.value)
    assert "\n" not in message and message.startswith("the ONNX artifact /m needs onnxruntime_absent_for_test")


def test_bnb_artifact_without_accelerate_names_the_bnb_extra(tmp_path, demo_dir):
    """A bitsandbytes directory (the demo's files, a 4-bit config) loaded where accelerate is hidden."""
    import json
    import shutil

    model = tmp_path / "guard-nf4"
    shutil.copytree(demo_dir, model, ignore=shutil.ignore_patterns("*.safetensors", "manifest.json"))
    config = json.loads((model / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "bitsandbytes", "load_in_4bit": True, "bnb_4bit_quant_type": "nf4"}
    (model / "config.json").write_text(json.dumps(config))
    (model / "model.safetensors").write_bytes(b"")
    out = _classify_without("accelerate", model)
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
    assert "needs accelerate, which is not installed: pip install 'guardedge[bnb]'" in out.stderr


def test_onnx_artifact_without_onnxruntime_names_the_extra(tmp_path, demo_dir):
    import shutil

    from guardedge.runtime.artifact import write_manifest

    art = tmp_path / "guard-onnx"
    shutil.copytree(demo_dir, art, ignore=shutil.ignore_patterns("*.safetensors", "manifest.json"))
    (art / "decoder.onnx").write_bytes(b"x")
    (art / "vision.onnx").write_bytes(b"x")
    write_manifest(art, family="llama-guard-3-vision", backend="onnxruntime", precision="fp32",
                   components={"decoder": "decoder.onnx", "vision": "vision.onnx"}, recipe={}, source={}, show_progress=False)
    out = _classify_without("onnxruntime", art)
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
    assert "needs onnxruntime, which is not installed: pip install 'guardedge[cpu]'" in out.stderr


def _classify_without(module: str, model) -> subprocess.CompletedProcess:
    """`guardedge classify --model MODEL` in a process where ``module`` looks not installed."""
    code = ("import sys; import importlib.util as u; orig = u.find_spec; "
            f"u.find_spec = lambda n, *a: None if n == {module!r} else orig(n, *a); "
            "from guardedge.runtime.cli import main; sys.exit(main(sys.argv[1:]))")
    return subprocess.run([sys.executable, "-c", code, "classify", "--model", str(model), "--text", "hi"],
                          capture_output=True, text=True, timeout=300)

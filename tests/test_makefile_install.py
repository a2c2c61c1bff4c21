"""``make install``'s torch choice, run with a fake Python that records each pip call.

No package is installed: the fake answers pip's calls, refusing the ones the case says fail, so
the test shows which index is asked first and that the fallback keeps ``make`` going.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

FAKE = """#!/bin/sh
echo "$*" >> "{log}"
case "$*" in *{fail}*) exit 1;; esac
exit 0
"""


def _make(tmp_path: Path, fail: str, gpu: bool) -> list[str]:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    log = tmp_path / "calls.log"
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    fake = venv / "bin" / "python"
    fake.write_text(FAKE.format(log=log, fail=fail))
    fake.chmod(0o755)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    if gpu:
        (bin_dir / "nvidia-smi").write_text("#!/bin/sh\nexit 0\n")
        (bin_dir / "nvidia-smi").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:/usr/bin:/bin"}
    out = subprocess.run(["make", "-B", "-C", str(ROOT), "install", f"VENV={venv}"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    return [line for line in log.read_text().splitlines() if "torch" in line]


def test_cpu_machine_asks_the_cpu_index_first(tmp_path):
    calls = _make(tmp_path, fail="NOTHING-FAILS", gpu=False)
    assert calls == ["-m pip install -q --retries 1 --timeout 20 --index-url https://download.pytorch.org/whl/cpu torch==2.13.0"]


def test_unreachable_cpu_index_falls_back_to_the_default_index(tmp_path):
    calls = _make(tmp_path, fail="download.pytorch.org", gpu=False)
    assert calls[1] == "-m pip install -q torch==2.13.0"


def test_gpu_machine_gets_the_default_index(tmp_path):
    calls = _make(tmp_path, fail="NOTHING-FAILS", gpu=True)
    assert calls == ["-m pip install -q torch==2.13.0"]

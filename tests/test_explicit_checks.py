"""A check run by name (``make image-check`` & co.) fails when it cannot run; inside ``make test`` it skips.

Issue 24: ``make image-check`` on a machine without podman printed one skipped test and exited 0,
which a person or a pipeline reads as a pass.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    # PATH is an empty folder: every tool the check needs is missing (pytest itself runs from sys.executable).
    full = {k: v for k, v in os.environ.items() if k != "GUARDEDGE_EXPLICIT_CHECK"}
    full.update(PATH=str(tmp_path), GUARDEDGE_DEPLOY_CHECKS="1", **env)
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "slow", "-p", "no:cacheprovider",
                           "tests/test_image.py"], cwd=ROOT, env=full, capture_output=True, text=True, timeout=300)


def test_a_check_run_by_name_fails_and_says_what_to_install(tmp_path):
    run = _run(tmp_path, GUARDEDGE_EXPLICIT_CHECK="image-check")
    assert run.returncode == 1, run.stdout + run.stderr
    assert "make image-check: FAILED, 1 check(s) could not run:" in run.stdout
    assert "podman, mmdebstrap, unshare, chroot, ip (install:" in run.stdout
    assert "apt-get install -y coreutils iproute2 mmdebstrap podman util-linux" in run.stdout


def test_inside_make_test_the_same_check_skips_with_its_reason(tmp_path):
    run = _run(tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "1 skipped" in run.stdout and "FAILED" not in run.stdout


def test_a_check_run_by_name_that_selects_nothing_fails(tmp_path):
    full = {**os.environ, "GUARDEDGE_EXPLICIT_CHECK": "slow-check"}
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "slow", "-p", "no:cacheprovider",
                          "tests/test_explicit_checks.py"], cwd=ROOT, env=full, capture_output=True, text=True, timeout=300)
    assert run.returncode != 0 and "make slow-check: FAILED, it did not run: nothing was checked." in run.stdout

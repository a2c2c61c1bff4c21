"""mypy over guardedge.runtime (issue 20), with pyproject's ``[tool.mypy]`` configuration.

mypy cannot follow pyproject's ``package-dir`` mapping (guardedge.runtime is runtime/, guardedge.v1 is
proto/guardedge/v1, ...), so this lays the folders out as the guardedge.* namespace in a directory of
symlinks and runs mypy from there. The directory and mypy's cache stay put between runs (one per
checkout, under the system's temp directory), so a rerun checks only what changed.

Run: ``.venv/bin/python tests/typecheck.py`` (mypy's report with the repository's own paths; the exit
status is mypy's). tests/test_typecheck.py runs it under ``make test``.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "guardedge.runtime"


def package_dirs() -> dict[str, str]:
    """pyproject's package-dir: guardedge.* package -> folder relative to the repository."""
    text = (ROOT / "pyproject.toml").read_text()
    line = next(ln for ln in text.splitlines() if ln.startswith("package-dir"))
    return dict(re.findall(r'"(guardedge\.[\w.]+)"\s*=\s*"([^"]+)"', line))


def work_dir() -> Path:
    """One stable directory per checkout, so mypy's cache keeps its paths and reruns are incremental."""
    digest = hashlib.sha256(str(ROOT).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"guardedge-typecheck-{digest}"


def build_shim(base: Path) -> Path:
    """base/src/guardedge/{runtime,export,...} -> the real folders; returns base/src."""
    package = base / "src" / "guardedge"
    package.mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").touch()
    for name, folder in package_dirs().items():
        link = package / name.removeprefix("guardedge.")
        target = ROOT / folder
        if link.is_symlink() and Path(os.readlink(link)) == target:
            continue
        fresh = link.with_name(f".{link.name}.{os.getpid()}")
        fresh.symlink_to(target, target_is_directory=True)
        os.replace(fresh, link)  # atomic, so a concurrent run never sees the link missing
    return package.parent


def run_mypy() -> subprocess.CompletedProcess[str]:
    base = work_dir()
    src = build_shim(base)
    command = [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"),
               "--cache-dir", str(base / "cache"), "--no-color-output", "--no-error-summary", "-p", PACKAGE]
    done = subprocess.run(command, cwd=src, capture_output=True, text=True)
    return subprocess.CompletedProcess(done.args, done.returncode, to_repository_paths(done.stdout), done.stderr)


def to_repository_paths(report: str) -> str:
    """guardedge/runtime/x.py:3: ... -> runtime/x.py:3: ... (the paths one opens)."""
    for name, folder in sorted(package_dirs().items(), key=lambda item: -len(item[0])):
        report = report.replace(name.replace(".", "/") + "/", folder.rstrip("/") + "/")
    return report


def errors(report: str) -> list[str]:
    return [line for line in report.splitlines() if ": error: " in line]


def main() -> int:
    done = run_mypy()
    sys.stdout.write(done.stdout)
    sys.stderr.write(done.stderr)
    print(f"mypy {PACKAGE}: {len(errors(done.stdout))} error(s)", file=sys.stderr)
    return done.returncode


if __name__ == "__main__":
    raise SystemExit(main())

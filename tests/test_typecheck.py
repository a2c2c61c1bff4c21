"""mypy finds no error in guardedge.runtime (issue 20), under pyproject's [tool.mypy] (tests/typecheck.py).

A rerun is incremental (mypy's cache, one per checkout, under the temp directory); a cold run on a
fresh clone analyses torch and transformers too and takes about a minute.
"""

from __future__ import annotations

from typecheck import errors, run_mypy, to_repository_paths


def test_runtime_type_checks():
    done = run_mypy()
    found = errors(done.stdout)
    assert done.returncode == 0 and not found, (
        f"mypy: {len(found)} error(s) in guardedge.runtime (run `.venv/bin/python tests/typecheck.py`):\n"
        + done.stdout + done.stderr)


def test_report_names_the_repository_folders():
    line = "guardedge/runtime/x.py:3: error: no  [misc]\nguardedge/v1/guard_pb2.pyi:1: note: n"
    assert to_repository_paths(line) == "runtime/x.py:3: error: no  [misc]\nproto/guardedge/v1/guard_pb2.pyi:1: note: n"

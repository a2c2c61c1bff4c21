"""Kill guardedge annotate at several points, restart it with the same command, and check that
every item ends up annotated exactly once, with the rows a clean run writes.

Kill points, in one sequence over one output: SIGKILL while a part file is half written, after
it is written but before its rename, right after a rename, at an arbitrary moment mid-run (from
outside), then SIGTERM (a clean stop: exit 143, what was done committed), then a run to the end.
The in-process kill points are injected into the real sink (its ``open`` and ``os.replace``) by a
driver script that then runs the real command: had the sink written parts in place, the half
written part would be committed and the next run would fail to read it.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections import Counter

import annotate_data
import pytest
from checks import require_env

from guardedge.runtime.annotate.sink import read_rows
from guardedge.runtime.annotate.sources import open_source

DRIVER = r'''
import builtins, os, signal, sys
from guardedge.runtime.annotate import sink

fault, nth, calls = os.environ.get("FAULT", ""), int(os.environ.get("FAULT_AT", "0")), [0]

def die():
    os.kill(os.getpid(), signal.SIGKILL)

class HalfWrite:  # the sink's file object for the Nth part: half the bytes reach the disk, then SIGKILL
    def __init__(self, f):
        self.f = f
    def __enter__(self):
        return self
    def __exit__(self, *exc):
        self.f.close()
    def write(self, data):
        self.f.write(data[: len(data) // 2])
        self.f.flush()
        die()

def sink_open(path, mode="r", *args, **kwargs):
    f = builtins.open(path, mode, *args, **kwargs)
    if fault == "mid-write" and os.path.basename(str(path)).startswith(".part-"):
        calls[0] += 1
        if calls[0] == nth:
            return HalfWrite(f)
    return f

class Os:  # the sink's os module: SIGKILL just before or just after the Nth part's rename
    def __getattr__(self, name):
        return getattr(os, name)
    def replace(self, src, dst):
        if os.path.basename(str(dst)).startswith("part-") and fault in ("before-rename", "after-rename"):
            calls[0] += 1
            if calls[0] == nth and fault == "before-rename":
                die()
            os.replace(src, dst)
            if calls[0] == nth:
                die()
            return
        os.replace(src, dst)

sink.open, sink.os = sink_open, Os()
from guardedge.runtime.cli import main
sys.exit(main(sys.argv[1:]))
'''


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return annotate_data.write_parquet(tmp_path_factory.mktemp("kill") / "data.parquet", 24)


def start(driver, args, fault: str = "", at: int = 0) -> subprocess.Popen:
    env = {**__import__("os").environ, "FAULT": fault, "FAULT_AT": str(at)}
    return subprocess.Popen([sys.executable, str(driver), "annotate", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def parts(out) -> int:
    return len(list(out.glob("part-*.parquet"))) if out.exists() else 0


def wait_for_parts(proc, out, count: int) -> None:
    deadline = time.monotonic() + 300
    while parts(out) < count:
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline
        time.sleep(0.05)


@pytest.mark.slow
def test_killed_anywhere_and_restarted_every_item_is_annotated_exactly_once(dataset, demo_dir, demo_engine, tmp_path):
    require_env("GUARDEDGE_SLOW", "slow-check", "SIGKILLs annotate at several points and restarts it (a minute or two on 2 cores)")
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    out = tmp_path / "out"
    args = ["--model", str(demo_dir), "--input", str(dataset), "--out", str(out), "--batch-size", "2",
            "--flush-rows", "3", "--no-progress"]
    for fault, at in (("mid-write", 2), ("before-rename", 1), ("after-rename", 2)):
        before = parts(out)
        proc = start(driver, args, fault, at)
        assert proc.wait(timeout=600) == -signal.SIGKILL, proc.stderr.read()
        assert parts(out) == before + at - (fault != "after-rename")  # the killed part never appears
        assert list(out.glob(".part-*.tmp")) if fault != "after-rename" else True  # left behind ...

    proc = start(driver, args)  # ... and dropped by the next run, killed from outside mid-run
    wait_for_parts(proc, out, parts(out) + 1)
    proc.kill()
    proc.wait(timeout=60)

    proc = start(driver, args)  # SIGTERM: a clean stop
    before = len(list(read_rows(out, ["key"])))
    wait_for_parts(proc, out, parts(out) + 1)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=300)
    summary = json.loads(stdout.splitlines()[-1])
    if proc.returncode == 143:  # (a run that finished before the signal landed exits 0: also fine)
        assert summary["run"]["stopped_by"] == "SIGTERM" and "rerun the same command to resume" in stdout
    assert len(list(read_rows(out, ["key"]))) - before == summary["run"]["written"]  # what it did is written

    final = subprocess.run([sys.executable, str(driver), "annotate", *args], capture_output=True, text=True, timeout=600)
    assert final.returncode == 0, final.stderr
    rows = list(read_rows(out))
    counts = Counter(r["key"] for r in rows)
    expected_keys = {item.key for item in open_source([str(dataset)])}
    assert set(counts) == expected_keys and set(counts.values()) == {1}  # nothing lost, nothing twice
    assert not list(out.glob(".part-*.tmp"))
    clean = {}
    for item in open_source([str(dataset)]):
        if item.key != "broken":
            [clean[item.key]] = demo_engine.classify([demo_engine.parse(item.request)])
    for row in rows:
        if row["key"] in clean:
            verdict = clean[row["key"]]
            assert (row["verdict"], row["categories"]) == (verdict.verdict, list(verdict.categories))
            assert row["unsafe_probability"] == pytest.approx(verdict.unsafe_probability, abs=1e-5)

"""guardedge annotate --ray: the same rows as the local path, and a worker killed mid-run loses and
duplicates nothing.

The Ray runs (a local Ray instance of 2 CPUs, two actors of half a CPU each, the demo guards)
take minutes here: ``make ray-check`` runs them (GUARDEDGE_RAY=1). Inside ``make test`` one fast
test checks the Ray path's pieces without Ray: the rows Ray's readers give become the local
path's items, and the actor class's call gives the local path's rows.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from collections import Counter
from pathlib import Path

import annotate_data
import pytest
from checks import require_env

from guardedge.runtime.annotate.keys import KeyIndex
from guardedge.runtime.annotate.policy import Policy
from guardedge.runtime.annotate.rows import COLUMNS
from guardedge.runtime.annotate.runner import Annotator
from guardedge.runtime.annotate.sink import read_rows
from guardedge.runtime.annotate.sources import open_source


def ray_rows_of(source) -> list[dict]:
    """What Ray Data's readers hand map_batches for this source (read_parquet's columns,
    read_webdataset(decoder=None)'s __key__/__url__/extension columns, the driver's folder listing)."""
    if source.format == "parquet":
        import pyarrow.parquet as pq

        return [row for path in source.paths for row in pq.read_table(path).to_pylist()]
    if source.format == "folder":
        from guardedge.runtime.annotate.sources import folder_files

        return [{"key": f.relative_to(r).as_posix(), "path": str(f)} for r in source.paths for f in folder_files(r)]
    rows = []
    for shard in source.paths:
        with tarfile.open(shard) as tar:
            samples: dict[str, dict] = {}
            for member in tar.getmembers():
                key, ext = member.name.split(".", 1)
                samples.setdefault(key, {"__key__": key, "__url__": str(shard)})[ext] = tar.extractfile(member).read()
        rows.extend(samples.values())
    names = sorted({name for row in rows for name in row})  # a block's columns: every sample's extensions
    return [{name: row.get(name) for name in names} for row in rows]


@pytest.mark.parametrize("fmt", ["folder", "parquet", "webdataset"])
def test_the_ray_actor_gives_the_local_rows_without_ray(fmt, demo_dir, demo_engine, tmp_path):
    import pyarrow as pa

    from guardedge.runtime.annotate.ray_path import RayAnnotator, items_of
    from guardedge.runtime.annotate.tables import resolve_columns

    write = {"folder": lambda: annotate_data.write_folder(tmp_path / "f", 6),
             "parquet": lambda: annotate_data.write_parquet(tmp_path / "d.parquet", 6),
             "webdataset": lambda: annotate_data.write_shards(tmp_path / "w", 6, per_shard=3)}[fmt]
    source = open_source([str(write())])
    columns = resolve_columns(["key", "image"], source.columns, "t") if fmt == "parquet" else source.columns
    rows = ray_rows_of(source)
    base_dir = str(source.paths[0].parent)
    local_items = list(source)
    assert [(i.key, i.request, i.error) for i in items_of(rows, fmt, columns, base_dir)] == \
        [(i.key, i.request, i.error) for i in local_items]
    done = KeyIndex()
    done.add(local_items[0].key)  # committed earlier: the actor skips it
    actor = RayAnnotator(str(demo_dir), {}, Policy(), "m" * 64, fmt, columns, base_dir, done, 4, 1)
    table = actor(pa.Table.from_pylist(rows))
    local = Annotator(demo_engine, Policy(), "m" * 64).rows(local_items[1:], 4)
    assert table.column_names == list(COLUMNS)
    assert [{**r, "category_scores": dict(r["category_scores"])} for r in table.to_pylist()] == local


# -- on Ray (make ray-check) ---------------------------------------------------------------------

def ray_env() -> dict:
    # A short private temp dir: Ray's socket paths must stay under 108 bytes, and the test can tell
    # its own Ray processes by it.
    return {**os.environ, "RAY_TMPDIR": tempfile.mkdtemp(prefix="gr", dir="/tmp"), "RAY_DEDUP_LOGS": "0"}


def annotate_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "guardedge.runtime.cli", "annotate", *args, "--no-progress"]


def ray_args(demo: str, data: Path, out: Path) -> list[str]:
    return ["--model", demo, "--input", str(data), "--out", str(out), "--batch-size", "4", "--ray",
            "--ray-cpus", "2", "--actors", "2", "--cpus-per-actor", "0.5", "--flush-rows", "4"]


def stop_ray_processes(env: dict) -> None:
    """Kill the Ray processes this test started (their command line or environment names its
    private temp dir), one by one: a killed driver can leave them behind."""
    mine = env["RAY_TMPDIR"].encode()
    for pid in os.listdir("/proc"):
        try:
            if pid.isdigit() and int(pid) != os.getpid() and any(
                    mine in Path(f"/proc/{pid}/{what}").read_bytes() for what in ("cmdline", "environ")):
                os.kill(int(pid), signal.SIGKILL)
        except OSError:
            pass
    shutil.rmtree(env["RAY_TMPDIR"], ignore_errors=True)  # its session logs and spilled objects


@pytest.fixture(scope="module")
def ray_data(tmp_path_factory):
    require_env("GUARDEDGE_RAY", "ray-check", "runs a local Ray instance (minutes)")
    pytest.importorskip("ray", reason="pip install 'guardedge[ray]'")
    root = tmp_path_factory.mktemp("ray")
    return {"folder": annotate_data.write_folder(root / "folder", 8),
            "parquet": annotate_data.write_parquet(root / "d.parquet", 8),
            "webdataset": annotate_data.write_shards(root / "shards", 8, per_shard=3)}


def rows_by_key(out: Path) -> dict:
    rows = list(read_rows(out))
    assert len({r["key"] for r in rows}) == len(rows)
    return {r["key"]: r for r in rows}


@pytest.mark.slow
@pytest.mark.parametrize("model", ["demo", "demo-llavaguard"])
@pytest.mark.parametrize("fmt", ["folder", "parquet", "webdataset"])
def test_ray_gives_the_local_rows(model, fmt, ray_data, tmp_path):
    local = subprocess.run(annotate_cmd("--model", model, "--input", str(ray_data[fmt]), "--out", str(tmp_path / "local")),
                           capture_output=True, text=True, timeout=600)
    assert local.returncode == 0, local.stderr
    env = ray_env()
    try:
        ray = subprocess.run(annotate_cmd(*ray_args(model, ray_data[fmt], tmp_path / "ray")), capture_output=True,
                             text=True, timeout=600, env=env)
    finally:
        stop_ray_processes(env)
    assert ray.returncode == 0, ray.stderr[-3000:]
    local_rows, ray_rows = rows_by_key(tmp_path / "local"), rows_by_key(tmp_path / "ray")
    assert ray_rows.keys() == local_rows.keys()
    for key, row in local_rows.items():
        other = ray_rows[key]
        for column in COLUMNS:
            if column.endswith("probability") and row[column] is not None:
                assert other[column] == pytest.approx(row[column], abs=1e-5), (key, column)  # batch padding
            else:
                assert other[column] == row[column], (key, column)


@pytest.mark.slow
def test_a_ray_worker_killed_mid_run_loses_and_duplicates_nothing(ray_data, tmp_path):
    data = annotate_data.write_parquet(tmp_path / "big.parquet", 40, row_group=4)
    out = tmp_path / "ray"
    env = ray_env()
    proc = subprocess.Popen(annotate_cmd(*ray_args("demo", data, out)), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        victim = wait_for_rows_then_kill_an_actor(proc, out, env)
        stdout, stderr = proc.communicate(timeout=600)
    finally:
        stop_ray_processes(env)
    assert proc.returncode == 0, stderr[-3000:]
    assert victim
    counts = Counter(r["key"] for r in read_rows(out))
    assert set(counts) == {i.key for i in open_source([str(data)])} and set(counts.values()) == {1}
    assert json.loads(stdout.splitlines()[-1])["rows"] == 41


def wait_for_rows_then_kill_an_actor(proc, out: Path, env: dict) -> int:
    """Once the first part is committed, SIGKILL one map actor (a process of this test's Ray)."""
    deadline = time.monotonic() + 400
    while not list(out.glob("part-*.parquet")):
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.1)
    for pid in os.listdir("/proc"):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            environ = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            continue
        if cmdline.startswith(b"ray::MapWorker") and env["RAY_TMPDIR"].encode() in environ:
            os.kill(int(pid), signal.SIGKILL)
            return int(pid)
    return 0

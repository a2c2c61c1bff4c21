"""guardedge annotate with the demo guards: every family annotates a folder, a Parquet file and
WebDataset shards; rows match the engine's own verdicts; errors are rows; the command resumes,
refuses another policy, summarises and reports."""

from __future__ import annotations

import json
import subprocess
import sys

import annotate_data
import pytest

from guardedge.runtime.annotate.policy import Policy
from guardedge.runtime.annotate.runner import Annotator, LocalRun
from guardedge.runtime.annotate.sink import OutputDir, RunIdentity, read_rows
from guardedge.runtime.annotate.sources import open_source

N = 10


@pytest.fixture(scope="module")
def lg_engine():
    from guardedge.runtime.demo.llavaguard.build import ensure_demo_llavaguard
    from guardedge.runtime.engine import EngineOptions, load_engine

    return load_engine(str(ensure_demo_llavaguard(progress=False)), EngineOptions(progress=False))


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    root = tmp_path_factory.mktemp("annotate-data")
    return {"folder": annotate_data.write_folder(root / "folder", N),
            "parquet": annotate_data.write_parquet(root / "p" / "data.parquet", N),
            "webdataset": annotate_data.write_shards(root / "shards", N, per_shard=4)}


def annotate(engine, source, out, policy=Policy(), annotator_class=Annotator, **kwargs):
    annotator = annotator_class(engine, policy, "m" * 64)
    info = engine.info()
    identity = RunIdentity(info.name, "m" * 64, info.family, annotator.policy_sha256, policy.rationale, "parquet")
    stats = LocalRun(annotator, OutputDir(out, identity), **kwargs).run(source)
    return stats, {r["key"]: r for r in read_rows(out)}


def reference(engine, source, policy=Policy()) -> dict:
    """The engine's own verdicts for the same items (errors left out)."""
    from guardedge.runtime.errors import InvalidRequest

    out = {}
    for item in source:
        try:
            request = engine.parse(policy.apply(item.request), item.base_dir) if item.request else None
        except InvalidRequest:
            continue
        if request is not None:
            [out[item.key]] = engine.classify([request])
    return out


@pytest.mark.parametrize("family", ["demo", "demo-llavaguard"])
@pytest.mark.parametrize("fmt", ["folder", "parquet", "webdataset"])
def test_every_family_annotates_each_source_as_the_engine_classifies(family, fmt, datasets, demo_engine, lg_engine, tmp_path):
    engine = demo_engine if family == "demo" else lg_engine
    source = open_source([str(datasets[fmt])])
    stats, rows = annotate(engine, source, tmp_path / "out", batch_size=3, workers=2, flush_rows=4)
    keys = [i.key for i in source]
    assert sorted(rows) == sorted(keys) and stats.written == len(keys)  # every item once
    expected = reference(engine, source)
    assert len(expected) == N
    for key, verdict in expected.items():
        row = rows[key]
        assert (row["verdict"], row["categories"], row["raw_output"]) == (verdict.verdict, list(verdict.categories), verdict.raw_output)
        assert row["unsafe_probability"] == pytest.approx(verdict.unsafe_probability, abs=1e-5)
        assert row["error"] == (verdict.error or None) and row["model_sha256"] == "m" * 64
    errors = {k: r["error"] for k, r in rows.items() if r["verdict"] is None}
    assert len(errors) == len(keys) - N and all(e.startswith(("INVALID_ARGUMENT", "SOURCE")) for e in errors.values())
    assert {r["verdict"] for r in rows.values()} >= ({"unsafe"} if family == "demo" else {"safe", "unsafe"})


def test_a_batch_the_engine_fails_on_is_retried_item_by_item(demo_engine, datasets, tmp_path):
    poisoned: list = []

    class Flaky:  # the real engine, failing on any batch that holds img0003
        def __getattr__(self, name):
            return getattr(demo_engine, name)

        def run(self, batch, threshold=None):
            if any(p is poisoned[0] for p in batch):
                raise RuntimeError("CUDA error: device-side assert")
            return demo_engine.run(batch, threshold)

    class Recording(Annotator):
        def prepare(self, item):
            prepared = super().prepare(item)
            if item.key == "img0003":
                poisoned.append(prepared)
            return prepared

    _, rows = annotate(Flaky(), open_source([str(datasets["parquet"])]), tmp_path / "out", batch_size=4,
                       annotator_class=Recording)
    assert rows["img0003"]["verdict"] is None and rows["img0003"]["error"].startswith("INTERNAL: the engine failed")
    assert all(r["verdict"] for k, r in rows.items() if k not in ("img0003", "broken")) and len(rows) == N + 1


def test_duplicate_keys_in_a_source_are_annotated_once(demo_engine, tmp_path):
    path = annotate_data.write_jsonl(tmp_path / "r.jsonl", 3)
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines + [lines[0]]) + "\n")  # img0000 again
    stats, rows = annotate(demo_engine, open_source([str(path)]), tmp_path / "out")
    assert stats.duplicates == 1 and stats.duplicate_examples == ["img0000"] and len(rows) == 4


def test_llavaguard_rationale_rows_and_the_policy_hash_of_the_options(lg_engine, datasets, tmp_path):
    source = open_source([str(datasets["folder"])])
    policy = Policy(excluded=("O6",), rationale=True)
    _, rows = annotate(lg_engine, source, tmp_path / "out", policy=policy)
    decided = [r for r in rows.values() if r["verdict"] in ("safe", "unsafe")]
    assert decided and all(r["rationale"] for r in decided)
    assert "O6" not in {c for r in decided for c in r["categories"]}
    digest = policy.digest(lg_engine.info().family, lg_engine.info().categories)
    assert {r["policy_sha256"] for r in rows.values()} == {digest} != {Policy().digest("llavaguard", lg_engine.info().categories)}


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "guardedge.runtime.cli", "annotate", *args, "--no-progress"],
                          capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_the_command_summarises_reports_resumes_and_refuses_another_policy(datasets, demo_dir, tmp_path):
    from checks import require_env

    require_env("GUARDEDGE_SLOW", "slow-check", "three annotate runs in subprocesses (~25 s)")
    out, report = tmp_path / "out", tmp_path / "report.md"
    args = ["--model", str(demo_dir), "--input", str(datasets["webdataset"]), "--out", str(out)]
    first = cli(*args, "--report", str(report), "--batch-size", "4")
    assert first.returncode == 0, first.stderr
    summary = json.loads(first.stdout.splitlines()[-1])
    assert summary["rows"] == N + 2 and summary["run"]["written"] == N + 2 and summary["errors"] == {"INVALID_ARGUMENT": 1, "SOURCE": 1}
    assert "verdicts:" in first.stdout and "items/s" in first.stdout
    assert "| verdict | rows | share |" in report.read_text() and report.with_suffix(".png").stat().st_size > 1000
    again = cli(*args)
    assert again.returncode == 0 and json.loads(again.stdout.splitlines()[-1])["run"] == {
        **json.loads(again.stdout.splitlines()[-1])["run"], "written": 0, "already_done": N + 2}
    refused = cli(*args, "--exclude", "S1")
    assert refused.returncode == 1 and "another policy" in refused.stderr and "name a new --out" in refused.stderr
    other = cli(*args[:-1], str(tmp_path / "out2"), "--exclude", "S1", "--output-format", "jsonl")
    assert other.returncode == 0 and (tmp_path / "out2" / "part-000000.jsonl").is_file()
    bad = cli(*args[:-1], str(tmp_path / "out3"), "--exclude", "S99")
    assert bad.returncode == 1 and "policy options are invalid" in bad.stderr and not (tmp_path / "out3").exists()

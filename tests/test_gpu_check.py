"""The CPU side of ``guardedge bench gpu-check`` / ``make gpu-check`` (bench/gpu_check.py): its
arguments, the no-CUDA exit, the time plan, the orchestration and the report on fake sections."""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from checks import install_hint, require_env

from guardedge.bench import gpu_check, gpu_sections
from guardedge.bench.gpu_report import Report, table

ROOT = Path(__file__).resolve().parents[1]


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    gpu_check.configure_parser(parser)
    return parser.parse_args(list(argv))


@pytest.mark.parametrize("argv", [[], ["--out", "x", "--budget", "900"], ["--out", "x", "--budget", "ten"],
                                  ["--out", "x", "--sections", "demo,gpu"], ["--out", "x", "--sections", ","]])
def test_bad_arguments_are_refused(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        _parse(*argv)
    assert exit_.value.code == 2


def test_sections_keep_the_designed_order_and_budget_defaults_to_420():
    args = _parse("--out", "x", "--sections", "switches,env")
    assert args.sections == ["env", "switches"] and args.budget == 420


def test_without_cuda_it_exits_0_and_says_plainly_that_nothing_was_measured(tmp_path):
    out = tmp_path / "out"
    run = subprocess.run([sys.executable, "-m", "guardedge.bench.gpu_check", "--out", str(out)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0
    assert run.stdout.strip().splitlines()[-1] == (
        "gpu-check: no CUDA device: NOTHING WAS MEASURED (exit 0 so it runs anywhere; this is not a pass)")
    assert json.loads((out / "gpu_check.json").read_text()) == {"measured": False, "reason": "no CUDA device", "sections": {}}
    bad = subprocess.run([sys.executable, "-m", "guardedge.bench.gpu_check", "--out", str(out), "--budget", "5"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--budget must be between 60 and 480" in bad.stderr


def test_make_gpu_check_runs_on_a_machine_without_cuda(tmp_path):
    if shutil.which("make") is None:
        pytest.skip(f"make is not installed ({install_hint(['make'])})")
    run = subprocess.run(["make", "-s", "-C", str(ROOT), "gpu-check", f"GPU_OUT={tmp_path / 'o'}"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip().splitlines()[-1].startswith("gpu-check: no CUDA device: NOTHING WAS MEASURED")


def test_the_last_line_counts_what_was_measured():
    assert gpu_check.summary_line({"env": {"status": "ok"}, "demo": {"status": "error"}}) == "gpu-check: measured 1 of 2 sections (env)"
    assert "NOTHING WAS MEASURED" in gpu_check.summary_line({"env": {"status": "skipped"}, "demo": {"status": "cut"}})


def test_an_out_path_that_is_a_file_is_refused(tmp_path, capsys):
    (tmp_path / "f").write_text("")
    assert gpu_check.main(_parse("--out", str(tmp_path / "f"))) == 2


def test_plan_splits_the_budget_in_proportion():
    full = gpu_check.plan(420, list(gpu_check.SECTIONS))
    assert [s for s, _ in full] == list(gpu_check.SECTIONS)
    assert sum(c for _, c in full) == pytest.approx(420, abs=0.5)
    assert dict(full)["fullsize"] > dict(full)["demo"] > dict(full)["env"]
    assert gpu_check.plan(100, ["env"]) == [("env", 100.0)]
    assert dict(gpu_check.plan(200, ["demo", "preprocess"])) == {"demo": 150.0, "preprocess": 50.0}


def test_clock_caps_a_section_by_the_run_end():
    now = [0.0]
    clock = gpu_check.Clock(100, now=lambda: now[0])
    clock.start_section(30)
    now[0] = 10
    assert (clock.left(), clock.run_left()) == (20, 90)
    now[0] = 80
    clock.start_section(60)  # only 20 s of the run are left
    assert clock.left() == 20
    now[0] = 200
    assert (clock.left(), clock.run_left()) == (0, 0)


def test_run_section_isolates_errors_and_skips_what_cannot_run():
    clock = gpu_check.Clock(100)

    def boom(_clock, _context):
        raise RuntimeError("no kernel image")

    failed = gpu_check.run_section("demo", 10, clock, {}, boom)
    assert failed["status"] == "error" and "RuntimeError: no kernel image" in failed["reason"] and failed["cap_s"] == 10
    skipped = gpu_check.run_section("switches", 10, clock, {}, lambda c, x: {})
    assert skipped["status"] == "skipped" and "fullsize" in skipped["reason"]
    ok = gpu_check.run_section("switches", 10, clock, {"engine": object()}, lambda c, x: {"notes": ["ran"]})
    assert ok["status"] == "ok" and ok["notes"] == ["ran"]
    spent = gpu_check.Clock(0)
    assert gpu_check.run_section("env", 10, spent, {}, lambda c, x: {})["status"] == "cut"


def test_report_writes_markdown_and_json_after_every_section(tmp_path):
    report = Report(tmp_path, {"device": "NVIDIA H200", "date": "2026-12-02", "command": "gpu-check --out o", "budget_s": 420})
    report.add("env", {"status": "ok", "seconds": 1.25, "notes": ["GPU NVIDIA H200"]})
    first = json.loads((tmp_path / "gpu_check.json").read_text())
    assert list(first["sections"]) == ["env"] and first["device"] == "NVIDIA H200"
    rows = [{"path": "safe", "concurrency": 1, "p50_ms": 81.234567}, {"path": "unsafe", "concurrency": 16, "p95_ms": 1234.5}]
    report.add("fullsize", {"status": "ok", "tables": {"latency": rows}})
    report.add("demo", {"status": "skipped", "reason": "not installed: bitsandbytes"})
    md = (tmp_path / "gpu_check.md").read_text()
    assert md.startswith("### gpu-check: NVIDIA H200, 2026-12-02")
    assert "| path | concurrency | p50_ms | p95_ms |" in md
    assert "| safe | 1 | 81.23 |  |" in md and "| unsafe | 16 |  | 1234 |" in md  # 4 significant digits, gaps blank
    assert "Status: skipped: not installed: bitsandbytes." in md and "Status: ok (1.2 s)." in md
    assert json.loads((tmp_path / "gpu_check.json").read_text())["sections"]["fullsize"]["tables"]["latency"] == rows


def test_table_escapes_pipes_and_newlines():
    assert table([{"a": "x|y\nz"}]) == ["| a |", "|---|", "| x\\|y z |"]


def test_run_writes_every_section_with_fake_measurements(tmp_path, monkeypatch, capsys):
    calls = []

    def fake(name, result):
        def section(clock, context):
            calls.append(name)
            if name == "fullsize":
                context["engine"] = "the 11B engine"
            if name == "demo":
                raise ValueError("bad parity")
            return result

        return section

    monkeypatch.setattr(gpu_sections, "meta", lambda budget, command: {"device": "fake GPU", "budget_s": budget, "command": command})
    monkeypatch.setattr(gpu_sections, "SECTION_RUNNERS", {s: fake(s, {"tables": {"t": [{"k": s}]}}) for s in gpu_check.SECTIONS})
    assert gpu_check.run(tmp_path, 120, list(gpu_check.SECTIONS)) == 0
    assert calls == list(gpu_check.SECTIONS)
    data = json.loads((tmp_path / "gpu_check.json").read_text())
    assert {s: r["status"] for s, r in data["sections"].items()} == {
        "env": "ok", "demo": "error", "fullsize": "ok", "switches": "ok", "preprocess": "ok"}
    assert data["wall_s"] >= 0 and "ValueError: bad parity" in (tmp_path / "gpu_check.md").read_text()
    assert "gpu-check: demo: error" in capsys.readouterr().out



def test_a_finished_run_cancels_its_watchdog(tmp_path, monkeypatch):
    """An in-process run must not end the process later: the uncancelled watchdog of a test's run once
    ended a whole pytest session with exit 3, 150 s after that test had passed."""
    import time

    exits = []
    monkeypatch.setattr(gpu_check.os, "_exit", exits.append)
    monkeypatch.setattr(gpu_check, "GRACE_S", 0.0)
    monkeypatch.setattr(gpu_sections, "meta", lambda budget, command: {"device": "fake GPU"})
    monkeypatch.setattr(gpu_sections, "SECTION_RUNNERS", {s: (lambda clock, context: {}) for s in gpu_check.SECTIONS})
    assert gpu_check.run(tmp_path, 0.3, ["env"]) == 0
    time.sleep(0.6)  # past budget + grace
    assert exits == []


def test_the_watchdog_ends_the_run_and_leaves_a_note(tmp_path):
    script = (f"import time; from pathlib import Path; from guardedge.bench import gpu_check; "
              f"from guardedge.bench.gpu_report import Report; r = Report(Path({str(tmp_path)!r}), {{}}); "
              f"r.add('env', {{'status': 'ok'}}); gpu_check._watchdog(r, 0.5); time.sleep(30)")
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert run.returncode == 3 and "over budget" in run.stdout
    data = json.loads((tmp_path / "gpu_check.json").read_text())
    assert "stopped by the watchdog" in data["notes"][0] and data["sections"]["env"]["status"] == "ok"


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_cpu_rehearsal_of_the_cuda_sections(tmp_path, monkeypatch):
    """The sections' own code on the CPU, tiny model, eager compile: what would crash on the GPU crashes here."""
    import os

    require_env("GUARDEDGE_SLOW", "slow-check", "runs every section on the CPU for minutes")
    context = {"device": "cpu", "dtype": "float32", "model": "fullsize-random-tiny", "levels": (1, 2), "repeats": 1,
               "compile_backend": "eager"}
    clock = gpu_check.Clock(3000)
    results = {}
    for name in ("demo", "fullsize", "switches", "preprocess"):
        results[name] = gpu_check.run_section(name, 1500, clock, context, gpu_sections.SECTION_RUNNERS[name])
    report = Report(tmp_path, {"device": "cpu rehearsal"})
    for name, result in results.items():
        report.add(name, result)
    assert "| vision_attention eager -> sdpa | ok |" in (tmp_path / "gpu_check.md").read_text()
    assert {n: r["status"] for n, r in results.items()} == {"demo": "ok", "fullsize": "ok", "switches": "ok",
                                                              "preprocess": results["preprocess"]["status"]}
    # One parity table per demo plug-in (runtime/demos.py), each against its own CPU fp32 reference.
    tables = results["demo"]["tables"]
    demos = {name.removeprefix("verdict parity, ") for name in tables if name.startswith("verdict parity, ")}
    assert {"demo", "demo-llama-guard-4", "demo-llavaguard", "demo-shieldgemma-2"} <= demos
    for demo in demos:
        parity = {row["backend"]: row for row in tables[f"verdict parity, {demo}"]}
        assert parity["torch bf16"]["status"] == "ok", (demo, parity)
    assert {row["backend"]: row for row in tables["verdict parity, demo"]}["onnxruntime CUDA EP"]["status"] == "skipped"
    latency = results["fullsize"]["tables"]["latency (in-process; concurrency c = batches of c)"]
    assert [(r["path"], r["concurrency"], r["errors"]) for r in latency] == [
        ("safe", 1, 0), ("safe", 2, 0), ("unsafe", 1, 0), ("unsafe", 2, 0)]
    stage_names = [r["stage"] for r in results["fullsize"]["tables"]["stages (one 4-tile request; bench/stages.py)"]]
    assert sorted(stage_names) == sorted(["parse", "preprocess", "vision", "prefill", "prefill_text", "decode"])
    switches = {r["switch"]: r for r in results["switches"]["tables"]["off vs on"]}
    assert all(r["status"] == "ok" for r in switches.values()), switches
    assert switches["vision_attention eager -> sdpa"]["max_abs_diff"] < 1e-3 and switches["compile_decode"]["same_tokens"]
    assert results["preprocess"]["status"] in ("ok", "skipped")  # skipped until runtime/pixels.py is in this tree

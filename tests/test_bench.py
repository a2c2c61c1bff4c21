"""bench.reference's statistics: nearest-rank percentiles, never below the median."""

from __future__ import annotations

from guardedge.bench.reference import _stats


def test_percentiles_known_answers():
    assert _stats([0.010, 0.020]) == {"p50_ms": 15.0, "p90_ms": 20.0}
    assert _stats([i / 1000 for i in range(1, 41)]) == {"p50_ms": 20.5, "p90_ms": 36.0}
    assert _stats([0.005] * 5) == {"p50_ms": 5.0, "p90_ms": 5.0}


def test_reference_compare_end_to_end(demo_dir, capsys, tmp_path):
    """One round of `bench reference`: every side timed, verdicts compared, the JSON line last.
    (What it prints about speed is a benchmark's business, not a test's.)"""
    import argparse
    import json

    from guardedge.bench import reference

    plot = tmp_path / "reference.png"
    code = reference.main(argparse.Namespace(model=str(demo_dir), rounds=1, plot=str(plot)))
    lines = capsys.readouterr().out.strip().splitlines()
    report = json.loads(lines[-1])
    assert code == 0
    assert set(report["timings"]) == {"snippet_bf16", "snippet_fp32", "engine_no_drafts", "engine", "engine_batched"}
    assert all(t["p50_ms"] > 0 for t in report["timings"].values())
    # Every speedup is the published snippet's p50 over that side's p50, as the report says.
    reference_p50 = report["timings"]["snippet_bf16"]["p50_ms"]
    for name, timing in report["timings"].items():
        assert report["speedup"][name] == round(reference_p50 / timing["p50_ms"], 2), name
    assert report["verdicts_agree"] == {"snippet_bf16": 8, "snippet_fp32": 8}
    assert any("drafts off" in line for line in lines)
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

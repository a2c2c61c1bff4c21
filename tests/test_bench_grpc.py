"""The gRPC overhead bench runs end to end (structure only: timings are for bench/RESULTS.md)."""

from __future__ import annotations

import math

import pytest

from guardedge.bench.grpc_overhead import measure, percentiles


def test_percentiles_nearest_rank():
    assert percentiles([0.001, 0.002, 0.003, 0.004, 0.010]) == {"p50_ms": 3.0, "p90_ms": 10.0}


@pytest.mark.timeout(300)
def test_bench_measures_both_sides_and_the_load(demo_dir):
    report = measure(str(demo_dir), rounds=1, clients=2, threads=None)
    for key in ("in_process", "grpc", "server_side", "overhead", "wire"):
        assert set(report[key]) == {"p50_ms", "p90_ms"} and all(math.isfinite(v) for v in report[key].values())
    assert len(report["raw"]["grpc_s"]) == len(report["raw"]["in_process_s"]) == report["requests"]
    assert report["load"]["requests"] == 2 * report["requests"] and report["load"]["mean_batch_size"] >= 1

"""bench.reference's statistics: nearest-rank percentiles, never below the median."""

from __future__ import annotations

from guardedge.bench.reference import _stats


def test_percentiles_known_answers():
    assert _stats([0.010, 0.020]) == {"p50_ms": 15.0, "p90_ms": 20.0}
    assert _stats([i / 1000 for i in range(1, 41)]) == {"p50_ms": 20.5, "p90_ms": 36.0}
    assert _stats([0.005] * 5) == {"p50_ms": 5.0, "p90_ms": 5.0}

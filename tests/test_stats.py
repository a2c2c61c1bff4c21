"""export/stats.py: the agreement figures every export, sensitivity sweep and ``bench drift`` report,
checked against values worked out by hand."""

from __future__ import annotations

import pytest

from guardedge.export.stats import (ConditionError, compare, failed, grouped, margin_bucket, margin_buckets,
                                    parse_conditions, percentile, wilson)


def test_wilson_interval_textbook_values():
    low, high = wilson(400, 400)
    assert low == pytest.approx(400 / (400 + 1.959964**2)) and high == 1.0  # all equal: n / (n + z²)
    assert wilson(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)  # Wilson's own 95 % table
    assert wilson(99, 100)[0] == pytest.approx(0.9455, abs=1e-4)  # 1 flip in 100 is not "0.99 for sure"
    assert wilson(0, 0) == (0.0, 1.0)


def test_percentile_matches_numpy_linear():
    import numpy as np

    values = list(np.random.default_rng(0).random(37))
    for q in (0, 50, 99, 100):
        assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))
    assert percentile([], 99) == 0.0


def test_margin_buckets():
    assert margin_buckets() == ["0.00-0.05", "0.05-0.10", "0.10-0.20", "0.20-0.30", "0.30-0.50"]
    assert [margin_bucket(p) for p in (0.5, 0.46, 0.56, 0.35, 0.75, 0.0, 1.0)] == [
        "0.00-0.05", "0.00-0.05", "0.05-0.10", "0.10-0.20", "0.20-0.30", "0.30-0.50", "0.30-0.50"]


def test_compare_counts_flips_by_margin_and_sorts_them_nearest_first():
    ids = ["a", "b", "c", "d", "e"]
    ref_v, ref_p = ["unsafe", "unsafe", "safe", "safe", "unsafe"], [0.52, 0.9, 0.1, 0.45, 0.62]
    cand_v, cand_p = ["safe", "unsafe", "safe", "unsafe", "safe"], [0.49, 0.88, 0.1, 0.51, 0.4]
    out = compare(ids, ref_v, ref_p, cand_v, cand_p)
    assert (out["requests"], out["verdicts_equal"], out["verdict_flips"]) == (5, 2, 3)
    assert out["agreement"] == pytest.approx(0.4) and out["agreement_lower"] == pytest.approx(wilson(2, 5)[0])
    assert out["max_abs_delta_p"] == pytest.approx(0.22) and out["p50_abs_delta_p"] == pytest.approx(0.03)
    assert [f["id"] for f in out["flips"]] == ["a", "d", "e"] and out["flips"][0]["margin"] == pytest.approx(0.02)
    assert out["by_margin"]["0.00-0.05"]["requests"] == 2 and out["by_margin"]["0.00-0.05"]["verdicts_equal"] == 0
    assert out["by_margin"]["0.30-0.50"]["verdicts_equal"] == 2 and out["by_margin"]["0.05-0.10"]["requests"] == 0
    with pytest.raises(ValueError, match="one reference and one candidate"):
        compare(ids, ref_v, ref_p, cand_v[:4], cand_p)


def test_grouped_by_several_keys():
    out = grouped([["S1"], ["S1", "S2"], ["none"]], [True, False, True], [0.0, 0.5, 0.1])
    assert out["S1"]["requests"] == 2 and out["S1"]["verdicts_equal"] == 1 and out["S2"]["max_abs_delta_p"] == 0.5


def test_conditions_parse_and_fail_with_the_value():
    conditions = parse_conditions("agreement>=0.995, agreement_lower>=0.99,p99_abs_delta_p<=0.05")
    figures = {"agreement": 0.9975, "agreement_lower": 0.986, "p99_abs_delta_p": 0.01}
    assert failed(conditions, figures) == ["agreement_lower=0.986 fails >=0.99"]
    assert failed(parse_conditions("max_abs_delta_p<0.1"), {}) == ["max_abs_delta_p has no value (threshold <0.1)"]
    for bad in ("agreement=0.9", "kappa>=0.9", "agreement>=x", "agreement>=0.9,"):
        with pytest.raises(ConditionError):
            parse_conditions(bad)

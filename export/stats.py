"""How far a quantized guard's answers are from its source's, stated so a small set cannot flatter it.

Shared by the exporters (manifest ``validation``), ``guardedge export sensitivity`` / ``--keep
auto`` and ``guardedge bench drift``, so every figure means the same thing everywhere:

- verdict agreement with its **Wilson score interval** (95 %): 400 of 400 equal reads as
  agreement ≥ 0.990, not as 1.0; a target or gate may use the lower bound (``agreement_lower``);
- the **|ΔP(unsafe)| distribution** (p50, p99, max, mean);
- agreement **by the reference's margin** |P(unsafe) − 0.5| (flips live near the boundary, so a
  set without borderline requests says little: the bucket counts show how many a set has);
- **every flip** with the reference's P(unsafe) and margin;
- conditions such as ``agreement>=0.995,p99_abs_delta_p<=0.05`` (targets and gates).

    from guardedge.export.stats import compare, parse_conditions, failed
    figures = compare(ids, ref_verdicts, ref_p, cand_verdicts, cand_p)
    failed(parse_conditions("agreement_lower>=0.99"), figures)   # [] when it holds
"""

from __future__ import annotations

import math
import operator
import re
from dataclasses import dataclass
from typing import Sequence

Z95 = 1.959964  # two-sided 95 % normal quantile
MARGIN_EDGES = (0.0, 0.05, 0.1, 0.2, 0.3)  # |P(unsafe) - 0.5| of the reference; the last bucket is [0.3, 0.5]
DRIFT_METRICS = ("agreement", "agreement_lower", "mean_abs_delta_p", "p50_abs_delta_p", "p99_abs_delta_p",
                 "max_abs_delta_p", "verdict_flips")


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion k/n (95 % by default); (0, 1) when n is 0."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100), linear between order statistics (numpy's default); 0 when empty."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def margin_bucket(p_unsafe: float) -> str:
    """The |P(unsafe) - 0.5| bucket of a reference answer, e.g. ``0.00-0.05``."""
    margin = abs(p_unsafe - 0.5)
    low = max(e for e in MARGIN_EDGES if margin >= e)
    high = next((e for e in MARGIN_EDGES if e > low), 0.5)
    return f"{low:.2f}-{high:.2f}"


def margin_buckets() -> list[str]:
    return [f"{low:.2f}-{high:.2f}" for low, high in zip(MARGIN_EDGES, (*MARGIN_EDGES[1:], 0.5))]


def compare(ids: Sequence[str], ref_verdicts: Sequence[str], ref_p: Sequence[float], cand_verdicts: Sequence[str],
            cand_p: Sequence[float]) -> dict:
    """Agreement (with its interval), the |ΔP(unsafe)| distribution, agreement by margin and every flip."""
    n = len(ids)
    if not (n == len(ref_verdicts) == len(ref_p) == len(cand_verdicts) == len(cand_p)):
        raise ValueError("compare() needs one reference and one candidate answer per id")
    same = [a == b for a, b in zip(ref_verdicts, cand_verdicts)]
    deltas = [abs(a - b) for a, b in zip(ref_p, cand_p)]
    flips = [{"id": i, "reference": a, "candidate": b, "reference_p_unsafe": round(pa, 6),
              "candidate_p_unsafe": round(pb, 6), "margin": round(abs(pa - 0.5), 6)}
             for i, a, b, pa, pb, s in zip(ids, ref_verdicts, cand_verdicts, ref_p, cand_p, same) if not s]
    by_margin = {}
    for bucket in margin_buckets():
        rows = [k for k, p in enumerate(ref_p) if margin_bucket(p) == bucket]
        by_margin[bucket] = _group([same[k] for k in rows], [deltas[k] for k in rows])
    return {**_group(same, deltas), "verdict_flips": len(flips), "by_margin": by_margin,
            "flips": sorted(flips, key=lambda f: f["margin"])}


def _group(same: Sequence[bool], deltas: Sequence[float]) -> dict:
    n, k = len(same), sum(same)
    low, high = wilson(k, n)
    return {"requests": n, "verdicts_equal": k, "agreement": k / n if n else None,
            "agreement_lower": low, "agreement_upper": high,
            "mean_abs_delta_p": sum(deltas) / n if n else 0.0, "p50_abs_delta_p": percentile(deltas, 50),
            "p99_abs_delta_p": percentile(deltas, 99), "max_abs_delta_p": max(deltas, default=0.0)}


def grouped(keys: Sequence[Sequence[str]], same: Sequence[bool], deltas: Sequence[float]) -> dict[str, dict]:
    """``_group`` figures per key (an example may carry several, e.g. its categories)."""
    names = sorted({k for ks in keys for k in ks})
    return {name: _group([s for ks, s in zip(keys, same) if name in ks], [d for ks, d in zip(keys, deltas) if name in ks])
            for name in names}


# -- conditions (targets and gates) ------------------------------------------------------------------

OPERATORS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt}


class ConditionError(ValueError):
    """A malformed condition expression."""


@dataclass(frozen=True)
class Condition:
    metric: str
    op: str
    threshold: float

    def __str__(self) -> str:
        return f"{self.metric}{self.op}{self.threshold:g}"

    def holds(self, value: float | None) -> bool:
        return value is not None and OPERATORS[self.op](value, self.threshold)


def parse_conditions(expr: str, known: Sequence[str] = DRIFT_METRICS, what: str = "condition") -> list[Condition]:
    """``metric OP number`` terms separated by commas; an unknown metric or a malformed term is an error."""
    out = []
    for term in (t.strip() for t in expr.split(",")):
        match = re.fullmatch(r"([a-z0-9_]+)\s*(>=|<=|>|<)\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)", term)
        if not match:
            raise ConditionError(f"{what} term {term!r} is not METRIC OP NUMBER (OP one of >=, <=, >, <)")
        if match.group(1) not in known:
            raise ConditionError(f"{what} metric {match.group(1)!r} is unknown; known: {', '.join(known)}")
        out.append(Condition(match.group(1), match.group(2), float(match.group(3))))
    return out


def failed(conditions: Sequence[Condition], values: dict) -> list[str]:
    """One message per condition that does not hold (a metric with no value fails)."""
    out = []
    for c in conditions:
        value = values.get(c.metric)
        if value is None:
            out.append(f"{c.metric} has no value (threshold {c.op}{c.threshold:g})")
        elif not c.holds(value):
            out.append(f"{c.metric}={value:.6g} fails {c.op}{c.threshold:g}")
    return out

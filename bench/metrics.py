"""Metrics for ``guardedge bench drift``, in numpy: agreement between two models, quality against
labels, and the CI gate (``agreement>=0.995,f1_delta>=-0.005``, ``agreement_lower>=0.99``). The drift
figures themselves (Wilson interval, |ΔP| percentiles, margin buckets) are export/stats.py's, shared
with the exporters' manifests.

Positive class = ``unsafe``. An ``unparseable`` answer is not a flag: it counts as a negative
prediction in precision/recall/F1/FPR (and is counted on its own), and as its own class in kappa.
"""

from __future__ import annotations

import re
from typing import Sequence

import numpy as np

from guardedge.bench.evaldata import TASKS, Example, Prediction
from guardedge.export import stats

VERDICTS = ("safe", "unsafe", "unparseable")


def binary_scores(labels: Sequence[bool], predicted: Sequence[bool]) -> dict:
    y, p = np.asarray(labels, bool), np.asarray(predicted, bool)
    tp, fp = int(np.sum(y & p)), int(np.sum(~y & p))
    fn, tn = int(np.sum(y & ~p)), int(np.sum(~y & ~p))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    fpr = fp / (fp + tn) if fp + tn else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "fpr": fpr, "tp": tp, "fp": fp, "fn": fn, "tn": tn}


def cohen_kappa(a: Sequence[str], b: Sequence[str], classes: Sequence[str] = VERDICTS) -> float:
    """Agreement beyond chance; 1.0 when both raters agree and chance agreement is already 1."""
    a, b = np.asarray(a), np.asarray(b)
    observed = float(np.mean(a == b))
    chance = sum(float(np.mean(a == c)) * float(np.mean(b == c)) for c in classes)
    if chance == 1.0:
        return 1.0 if observed == 1.0 else 0.0
    return (observed - chance) / (1.0 - chance)


def roc_auc(labels: Sequence[bool], scores: Sequence[float]) -> float | None:
    """Mann-Whitney: P(score of a positive > score of a negative), ties count half. None with one class."""
    y, s = np.asarray(labels, bool), np.asarray(scores, float)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if not n_pos or not n_neg:
        return None
    _, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    average_rank = np.cumsum(counts) - (counts - 1) / 2.0  # 1-based ranks, ties share their mean
    ranks = average_rank[inverse]
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def average_precision(labels: Sequence[bool], scores: Sequence[float]) -> float | None:
    """PR-AUC as sum over thresholds of (R_k - R_k-1) * P_k (tied scores form one threshold)."""
    y, s = np.asarray(labels, bool), np.asarray(scores, float)
    if not y.any():
        return None
    order = np.argsort(-s, kind="mergesort")
    y, s = y[order], s[order]
    last_of_tie = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]
    tp = np.cumsum(y)[last_of_tie]
    precision, recall = tp / (last_of_tie + 1), tp / y.sum()
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def category_f1(truth: Sequence[set[str]], predicted: Sequence[set[str]]) -> dict:
    """Per code precision/recall/F1/support over paired category sets, plus micro F1 as ``_micro``."""
    codes = sorted(set().union(*truth, *predicted), key=_code_order)
    out, totals = {}, np.zeros(3, int)
    for code in codes:
        tp = sum(code in t and code in p for t, p in zip(truth, predicted))
        fp = sum(code not in t and code in p for t, p in zip(truth, predicted))
        fn = sum(code in t and code not in p for t, p in zip(truth, predicted))
        totals += (tp, fp, fn)
        out[code] = {**_prf(tp, fp, fn), "support": tp + fn}
    out["_micro"] = {**_prf(*totals), "support": int(totals[0] + totals[2])}
    return out


def _prf(tp: int, fp: int, fn: int) -> dict:
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    return {"precision": precision, "recall": recall, "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0}


def _code_order(code: str) -> tuple:
    match = re.fullmatch(r"([A-Za-z]*)(\d+)", code)
    return (match.group(1), int(match.group(2))) if match else (code, 0)


def label_metrics(examples: Sequence[Example], preds: Sequence[Prediction]) -> dict:
    """Quality against labels, per task, and per-category F1 over examples labelled or predicted unsafe."""
    out = {}
    for task in TASKS:
        rows = [(e, p) for e, p in zip(examples, preds, strict=True) if e.task == task]
        if not rows:
            continue
        truth = [e.label.verdict == "unsafe" for e, _ in rows]
        scores = [p.p_unsafe for _, p in rows]
        out[task] = {**binary_scores(truth, [p.verdict == "unsafe" for _, p in rows]),
                     "roc_auc": roc_auc(truth, scores), "pr_auc": average_precision(truth, scores),
                     "n": len(rows), "unparseable": sum(p.verdict == "unparseable" for _, p in rows)}
    flagged = [(e, p) for e, p in zip(examples, preds) if e.label.verdict == "unsafe" or p.verdict == "unsafe"]
    truth_sets = [set(e.label.categories) for e, _ in flagged]
    pred_sets = [set(p.categories) if p.verdict == "unsafe" else set() for _, p in flagged]
    out["categories"] = category_f1(truth_sets, pred_sets)
    return out


def agreement(base: Sequence[Prediction], cand: Sequence[Prediction]) -> dict:
    """How far a candidate drifted from the baseline, example by example: agreement with its Wilson
    interval, the |ΔP(unsafe)| distribution, agreement by the baseline's margin and every change
    with that margin (export/stats.py, the figures exports record too)."""
    a, b = [p.verdict for p in base], [p.verdict for p in cand]
    figures = stats.compare([p.id for p in base], a, [p.p_unsafe for p in base], b, [p.p_unsafe for p in cand])
    flips = [_flip(x, y) for x, y in zip(base, cand, strict=True) if x.verdict != y.verdict or x.categories != y.categories]
    kinds = {}
    for flip in flips:
        kinds[flip["kind"]] = kinds.get(flip["kind"], 0) + 1
    return {**{k: v for k, v in figures.items() if k != "flips"}, "agreement": float(np.mean(np.asarray(a) == np.asarray(b))),
            "kappa": cohen_kappa(a, b), "verdict_flips": sum(f["kind"] != "categories" for f in flips),
            "category_changes": kinds.get("categories", 0), "flip_kinds": kinds, "flips": flips}


def _flip(x: Prediction, y: Prediction) -> dict:
    kind = "categories" if x.verdict == y.verdict else f"{x.verdict}->{y.verdict}"
    return {"id": x.id, "kind": kind, "margin": round(abs(x.p_unsafe - 0.5), 6),
            "baseline": {"verdict": x.verdict, "categories": list(x.categories), "p_unsafe": x.p_unsafe},
            "candidate": {"verdict": y.verdict, "categories": list(y.categories), "p_unsafe": y.p_unsafe}}


def breakdown(examples: Sequence[Example], base: Sequence[Prediction], cand: Sequence[Prediction]) -> dict:
    """Agreement and |ΔP| per label (``safe``/``unsafe``) and per category code, from the labels when
    the data has them, else from the baseline's answers (keys then start with ``baseline ``)."""
    labelled = bool(examples) and all(e.label is not None for e in examples)
    same = [x.verdict == y.verdict for x, y in zip(base, cand, strict=True)]
    deltas = [abs(x.p_unsafe - y.p_unsafe) for x, y in zip(base, cand)]
    if labelled:
        verdicts = [[e.label.verdict] for e in examples]
        codes = [list(e.label.categories) or ["none"] for e in examples]
    else:
        verdicts = [[f"baseline {p.verdict}"] for p in base]
        codes = [[f"baseline {c}" for c in p.categories] or ["baseline none"] for p in base]
    by_code = stats.grouped(codes, same, deltas)
    return {"source": "labels" if labelled else "baseline", "by_label": stats.grouped(verdicts, same, deltas),
            "by_category": {k: by_code[k] for k in sorted(by_code, key=lambda c: _code_order(c.split()[-1]))}}


def label_deltas(base: dict, cand: dict) -> dict:
    """candidate - baseline for each per-task score, and micro category F1."""
    out = {}
    for task in TASKS:
        if task in base:
            for key in ("precision", "recall", "f1", "fpr", "roc_auc", "pr_auc"):
                if base[task][key] is not None and cand[task][key] is not None:
                    out[f"{task}_{key}"] = cand[task][key] - base[task][key]
    out["category_micro_f1"] = cand["categories"]["_micro"]["f1"] - base["categories"]["_micro"]["f1"]
    return out


# -- the gate --------------------------------------------------------------------------------

# Drift metrics: export/stats.py's (agreement, its Wilson lower bound, the |ΔP| distribution, flips) + these.
DRIFT_METRICS = stats.DRIFT_METRICS + ("kappa", "category_changes")
# Label metrics: the bare name is the worst task (min, or max for fpr); prompt_/response_ pick one.
LABEL_METRICS = ("precision", "recall", "f1", "fpr", "roc_auc", "pr_auc")
GATE_METRICS = (DRIFT_METRICS + LABEL_METRICS + tuple(f"{m}_delta" for m in LABEL_METRICS)
                + tuple(f"{t}_{m}{d}" for t in TASKS for m in LABEL_METRICS for d in ("", "_delta"))
                + ("category_micro_f1", "category_micro_f1_delta"))


class GateError(stats.ConditionError):
    """A malformed gate expression."""


class Condition(stats.Condition):
    @property
    def needs_labels(self) -> bool:
        return self.metric not in DRIFT_METRICS


def parse_gate(expr: str) -> list[Condition]:
    try:
        return [Condition(c.metric, c.op, c.threshold) for c in stats.parse_conditions(expr, GATE_METRICS, "gate")]
    except stats.ConditionError as exc:
        raise GateError(str(exc)) from None


def gate_values(drift: dict, metrics: dict | None, base_metrics: dict | None) -> dict:
    """The flat metric -> value table the gate reads, for one candidate."""
    values = {k: drift[k] for k in DRIFT_METRICS}
    if metrics is None:
        return values
    deltas = label_deltas(base_metrics, metrics)
    for m in LABEL_METRICS:
        per_task = {t: metrics[t][m] for t in TASKS if t in metrics and metrics[t][m] is not None}
        values.update({f"{t}_{m}": v for t, v in per_task.items()})
        values.update({f"{t}_{m}_delta": deltas[f"{t}_{m}"] for t in per_task if f"{t}_{m}" in deltas})
        worst = max if m == "fpr" else min  # the gate guards the weaker task
        if per_task:
            values[m] = worst(per_task.values())
        task_deltas = [deltas[f"{t}_{m}"] for t in per_task if f"{t}_{m}" in deltas]
        if task_deltas:
            values[f"{m}_delta"] = worst(task_deltas)
    values["category_micro_f1"] = metrics["categories"]["_micro"]["f1"]
    values["category_micro_f1_delta"] = deltas["category_micro_f1"]
    return values


def check_gate(conditions: Sequence[Condition], values: dict) -> list[str]:
    """One message per failed condition (a metric with no value, e.g. no AUC on one class, fails)."""
    return stats.failed(conditions, values)

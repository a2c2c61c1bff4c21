"""``--keep auto``: the smallest set of module groups kept in 16-bit that meets a target on calibration
data, then its agreement on separate held-out data (``export quantize`` and ``export onnx``).

    guardedge export quantize --model demo --bits 4 --keep auto --calib demo:calibration \\
        --heldout demo:evaluation --target "agreement>=0.995" --out /tmp/nf4-auto

1. Sensitivity of every candidate group on the calibration data (export/sensitivity.py, cached).
2. Greedy by sensitivity: quantize every candidate; while the target fails on the calibration data,
   keep the most sensitive group not yet kept, and measure again.
3. Prune: drop each kept group again (least sensitive first) when the target still holds without it,
   so no group is kept that the calibration data does not need.
4. Verified: the real export is made with that set and measured on the calibration data (the
   in-process trials are the fast path, not the figure) and on the held-out data, which played no
   part in the choice. Both figures, the data digests, the kept set, every search step and the memory
   the kept groups cost (this model, and the architecture's published checkpoints by group name)
   go into the manifest (``validation.keep_auto``).

Targets use export/stats.py's metrics: ``agreement``, ``agreement_lower`` (Wilson 95 %),
``p99_abs_delta_p``, ``max_abs_delta_p``, ... A target no recipe can meet (e.g. ``agreement_lower
>= 0.995`` on 400 examples, whose bound is 0.990 even at 400/400) is reported, not hidden.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from pathlib import Path

from guardedge.export import sweep
from guardedge.export.stats import failed, parse_conditions
from guardedge.runtime.errors import GuardError

log = logging.getLogger(__name__)
FIGURES = ("requests", "verdicts_equal", "agreement", "agreement_lower", "agreement_upper", "verdict_flips",
           "mean_abs_delta_p", "p50_abs_delta_p", "p99_abs_delta_p", "max_abs_delta_p")


@dataclass(frozen=True)
class AutoSpec:
    """What ``--keep auto`` was asked: the data sets, the target, and where trials are cached."""

    calib: str
    heldout: str
    target: str
    limit: int | None = None
    cache: Path | None = None
    max_work: int = sweep.MAX_WORK

    def conditions(self) -> list:
        return parse_conditions(self.target, what="--target")


def brief(figures: dict) -> dict:
    return {k: figures[k] for k in FIGURES if k in figures}


def load_sets(spec: AutoSpec, family):
    """(calibration, held-out) data in the family's shape; refused when they share a request."""
    from guardedge.export import checkdata

    calib = checkdata.load(spec.calib, spec.limit, family.name)
    heldout = checkdata.load(spec.heldout, spec.limit, family.name)
    checkdata.check_disjoint(calib, heldout, family)
    return calib, heldout


def search(trials, data, conditions: list, quiet: bool = False) -> dict:
    """Steps 1-3: {"kept": [...], "met": bool, "steps": [...], "order": [...], "reference": answers}."""
    reference, rows = sweep.sweep(trials, data, trials.candidates, quiet)
    if not quiet:
        log.info("  searching: at most %d more trials of %d examples", 2 * len(trials.candidates) + 1, len(data.examples))
    order = [r["group"] for r in sorted(rows, key=sweep.score, reverse=True)]
    steps: list[dict] = []

    def meets(kept: list[str], stage: str) -> bool:
        quantized = [g for g in trials.candidates if g.name not in kept]
        figures = sweep.figures(reference, trials.answers(quantized, data), data)
        problems = failed(conditions, figures)
        steps.append({"stage": stage, "kept": list(kept), "met": not problems, **brief(figures)})
        log.info("  %s keep [%s]: agreement %.4f (lower %.4f), p99 |ΔP| %.4f%s", stage, ", ".join(kept),
                 figures["agreement"], figures["agreement_lower"], figures["p99_abs_delta_p"], "" if problems else ": target met")
        return not problems

    kept: list[str] = []
    met = meets(kept, "greedy")
    for name in order:
        if met:
            break
        kept.append(name)
        met = meets(kept, "greedy")
    if met:
        for name in reversed(list(kept)):
            trial = [k for k in kept if k != name]
            if meets(trial, "prune"):
                kept = trial
    return {"kept": kept, "met": met, "steps": steps, "sensitivity": rows, "order": order, "reference": reference}


def run(trials, spec: AutoSpec, calib, heldout, stage: str, logger: logging.Logger) -> tuple[dict, list]:
    """The search on ``trials`` (bounded first, closed after): (its result, the fp32 answers on the
    held-out data). ``stage`` and ``logger`` are the calling export's ("[1/4]" and its module's log)."""
    check_work(spec, len(trials.candidates), len(calib.examples))
    logger.info("%s --keep auto: %d candidate groups, calibration %s (n=%d), target %s", stage, len(trials.candidates),
                calib.source, len(calib.examples), spec.target)
    try:
        result = search(trials, calib, spec.conditions(), quiet=not logger.isEnabledFor(logging.INFO))
        heldout_reference = trials.answers([], heldout)
    finally:
        trials.close()
    return result, heldout_reference


def check_work(spec: AutoSpec, candidates: int, examples: int) -> None:
    """The whole search's bound, before any model runs: the sweep (candidates + 1 trials), the greedy
    steps (at most candidates + 1) and the prune (at most candidates), each over the calibration data."""
    sweep.check_work(3 * candidates + 1, examples, spec.max_work, "--limit (fewer calibration examples)")


def verify(answers_fn, data, reference: list[tuple], conditions: list) -> dict:
    """The exported artifact's figures on ``data`` against the fp32 ``reference`` and the target."""
    figures = sweep.figures(reference, answers_fn([e.request for e in data.examples]), data)
    return {"source": data.source, "n": len(data.examples), "sha256": data.sha256, **brief(figures),
            "flips": figures["flips"], "by_margin": figures["by_margin"], "target_failures": failed(conditions, figures)}


def record(spec: AutoSpec, result: dict, calibration: dict, heldout: dict, fixed: dict, cost: dict) -> dict:
    """What the manifest keeps (``validation.keep_auto``)."""
    return {"target": spec.target, "kept": result["kept"], "fixed": fixed, "met_on_calibration_trials": result["met"],
            "calibration": calibration, "heldout": heldout, "steps": result["steps"], "order": result["order"],
            "kept_cost_bytes": cost}


def summary_lines(entry: dict) -> list[str]:
    """For people: the kept set, both verified figures, and whether the target held on each."""
    lines = [f"--keep auto: kept {', '.join(entry['kept']) or 'nothing'} (target {entry['target']}; "
             f"{len(entry['steps'])} trials)"]
    for name in ("calibration", "heldout"):
        f = entry[name]
        state = "met" if not f["target_failures"] else "MISSED: " + "; ".join(f["target_failures"])
        lines.append(f"  {name} {f['source']} (n={f['n']}): verdicts {f['verdicts_equal']}/{f['n']} "
                     f"(Wilson 95% {f['agreement_lower']:.4f}-{f['agreement_upper']:.4f}), p99 |ΔP| {f['p99_abs_delta_p']:.4f}, "
                     f"max {f['max_abs_delta_p']:.4f}: target {state}")
    for where, size in entry["kept_cost_bytes"].items():
        if isinstance(size, dict):
            lines.append(f"  keeping them costs {size['bytes'] / 1e6:.1f} MB on {where}"
                         + (f" (groups not in it: {', '.join(size['missing'])})" if size["missing"] else ""))
        else:
            lines.append(f"  keeping them costs {size / 1e6:.3f} MB on {where}")
    return lines


def ok(entry: dict) -> bool:
    return not entry["calibration"]["target_failures"] and not entry["heldout"]["target_failures"]


def check_spec(spec: AutoSpec | None, keep_given: bool) -> None:
    if spec is None:
        return
    if keep_given:
        raise GuardError("--keep auto chooses what is kept: leave out --skip-modules / --keep GROUPS")
    spec.conditions()  # a malformed target fails before any work


# -- command line (export quantize, export onnx) ------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``--keep auto`` and its data, target and cache (export quantize and export onnx)."""
    from guardedge.export.trials import DEFAULT_CACHE

    group = parser.add_argument_group("--keep auto (export/keep_auto.py)")
    group.add_argument("--calib", default="demo:calibration", help="data the kept set is chosen on (JSONL or demo:calibration)")
    group.add_argument("--heldout", default="demo:evaluation", help="separate data the chosen recipe is reported on")
    group.add_argument("--target", default="agreement>=0.995", help="conditions on the calibration data, e.g. "
                       "'agreement>=0.995,p99_abs_delta_p<=0.05' (agreement_lower: its Wilson 95%% lower bound)")
    group.add_argument("--limit", type=int, help="the first N examples of --calib and --heldout only")
    group.add_argument("--cache", default=str(DEFAULT_CACHE), help="trial cache directory")
    group.add_argument("--max-work", type=int, default=sweep.MAX_WORK,
                       help="most classifications the search may take: (3 x candidate groups + 2) x calibration examples")


def from_args(args: argparse.Namespace) -> AutoSpec | None:
    if args.keep != "auto":
        return None
    return AutoSpec(args.calib, args.heldout, args.target, args.limit, Path(args.cache) if args.cache else None,
                    args.max_work)

"""One module group quantized at a time, against the fp32 reference: the measurement that both
``guardedge export sensitivity`` (export/sensitivity.py) and ``--keep auto`` (export/keep_auto.py)
run, with its work bound. Trials come from export/trials.py (bnb in place, or ONNX copies)."""

from __future__ import annotations

import sys
import time

from guardedge.runtime.errors import GuardError

MAX_WORK = 20_000  # classifications (groups + 1) x examples a run may take without --max-work


def score(row: dict) -> tuple:
    """How sensitive a group is, for ordering: flips first, then the tail and the mean of |ΔP|."""
    return (row["verdict_flips"], row["p99_abs_delta_p"], row["mean_abs_delta_p"])


def figures(reference: list[tuple], got: list[tuple], data) -> dict:
    from guardedge.export.stats import compare

    return compare([e.id for e in data.examples], [a[0] for a in reference], [a[2] for a in reference],
                   [b[0] for b in got], [b[2] for b in got])


def check_work(groups: int, examples: int, max_work: int, narrow: str = "--groups (e.g. head,vision,mlp) or --limit") -> int:
    """(groups + 1) x examples classifications, refused above ``max_work`` before any model loads."""
    work = (groups + 1) * examples
    if work > max_work:
        raise GuardError(f"{groups + 1} trials x {examples} examples = {work} classifications is over "
                         f"--max-work {max_work}; narrow it with {narrow}, or raise --max-work")
    return work


def sweep(trials, data, groups: list, quiet: bool = False) -> tuple[list[tuple], list[dict]]:
    """The fp32 reference, then one trial per group: (reference answers, one row per group)."""
    from tqdm import tqdm

    start = time.perf_counter()
    cached = trials.cached([], data)
    reference = trials.answers([], data)
    per_example = (time.perf_counter() - start) / len(data.examples)
    todo = sum(not trials.cached([g], data) for g in groups)
    if not quiet:
        print(f"reference: {len(data.examples)} examples{' (cached)' if cached else f' in {per_example * len(data.examples):.1f} s'}; "
              f"{todo} of {len(groups)} group trials to run"
              + (f", estimated {todo * len(data.examples) * per_example / 60:.1f} min" if todo and not cached else ""),
              file=sys.stderr)
    rows = []
    for group in tqdm(groups, desc="groups", unit="group", disable=quiet, file=sys.stderr):
        was_cached = trials.cached([group], data)
        got = trials.answers([group], data)
        rows.append({"group": group.name, "kind": group.kind, "cached": was_cached,
                     **{k: v for k, v in figures(reference, got, data).items() if k not in ("by_margin",)}})
    return reference, rows

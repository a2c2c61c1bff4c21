"""What every export checks against its source, in one place: the requests, the answers, the figures.

The agreement set is the family's smoke requests (``family.smoke_requests()``: for Llama Guard 3
Vision the 8 demo samples, for LlavaGuard a handful of generated images under the default, an
excluded-category and a custom policy), classified as one batch exactly as ``guardedge export
verify`` runs them, followed by held-out requests in the family's own shape from the family's
demo plug-in (runtime/demos.py). Both exporters (quantize, onnx) and ``export verify`` use
these functions, so their figures mean the same thing.
"""

from __future__ import annotations

import logging

from tqdm import tqdm

HELD_OUT_SEED = 1  # the held-out split of the demo's synthetic data: data.examples("eval", n, seed)
DEFAULT_FAMILY = "llama-guard-3-vision"


def smoke_requests(family: str = DEFAULT_FAMILY) -> list[dict]:
    """The family's smoke request dicts (runtime/families: ``smoke_requests``)."""
    from guardedge.runtime.families import get_family

    return get_family(family).smoke_requests()


def parsed_smoke_requests(family: str = DEFAULT_FAMILY) -> list:
    from guardedge.runtime.families import get_family
    from guardedge.runtime.requests import parse_request

    categories = get_family(family).default_categories()
    return [parse_request(r, categories) for r in smoke_requests(family)]


def held_out_requests(n: int, family: str = DEFAULT_FAMILY) -> list:
    """``n`` held-out GuardRequests from the family's demo (runtime/demos.py)."""
    from guardedge.runtime.demos import demo_for_family

    if not n:
        return []
    demo = demo_for_family(family)
    if demo is None:
        raise ValueError(f"the {family} family has no demo to draw held-out requests from; use --agreement-n 0")
    return [x.request for x in demo.eval_set(n, HELD_OUT_SEED)[0]]


def answers(engine, requests: list, batch_size: int = 8, label: str = "") -> list[tuple]:
    """(verdict, categories, P(unsafe)) per request. The smoke requests, which open every
    agreement set, run as one batch: LLM.int8 picks its outlier columns over the whole batch, so
    an 8-bit answer moves (~1e-4) with its batch mates, and ``export verify`` batches them so."""
    n = len(smoke_requests(engine.family.name))
    batches = [requests[:n]] + [requests[i : i + batch_size] for i in range(n, len(requests), batch_size)]
    quiet = not label or not logging.getLogger("guardedge.export").isEnabledFor(logging.INFO)
    out: list[tuple] = []
    for batch in tqdm([b for b in batches if b], desc=f"classifying with {label}", disable=quiet):
        out += [(v.verdict, v.categories, v.unsafe_probability) for v in engine.classify(batch)]
    return out


def agreement(source: list[tuple], other: list[tuple], ids: list[str] | None = None) -> dict:
    """Verdict/category agreement of ``other`` against ``source``, with the Wilson interval, the
    |ΔP(unsafe)| distribution, agreement by the source's margin and every flip (export/stats.py)."""
    from guardedge.export.stats import compare

    ids = ids or [str(i) for i in range(len(source))]
    figures = compare(ids, [a[0] for a in source], [a[2] for a in source], [b[0] for b in other], [b[2] for b in other])
    rounded = {k: round(v, 6) for k, v in figures.items() if isinstance(v, float)}
    return {"requests": len(source), "verdicts_equal": figures["verdicts_equal"],
            "verdict_agreement": round(figures["agreement"], 4), "verdict_agreement_ci95": [rounded["agreement_lower"], rounded["agreement_upper"]],
            "categories_equal": sum(a[:2] == b[:2] for a, b in zip(source, other)),
            "max_abs_delta_p_unsafe": rounded["max_abs_delta_p"], "mean_abs_delta_p_unsafe": rounded["mean_abs_delta_p"],
            "p50_abs_delta_p_unsafe": rounded["p50_abs_delta_p"], "p99_abs_delta_p_unsafe": rounded["p99_abs_delta_p"],
            "by_margin": {b: {"requests": g["requests"], "verdicts_equal": g["verdicts_equal"]} for b, g in figures["by_margin"].items()},
            "flips": figures["flips"]}


def agreement_line(a: dict) -> str:
    """One line for people: agreement with its interval, the |ΔP| distribution and the flips' margins."""
    low, high = a["verdict_agreement_ci95"]
    margins = ", ".join(f"{f['margin']:.3f}" for f in a["flips"][:8]) + (" ..." if len(a["flips"]) > 8 else "")
    return (f"agreement with the source on {a['requests']} requests: verdicts {a['verdicts_equal']}/{a['requests']} "
            f"({a['verdict_agreement']:.2%}, Wilson 95% {low:.2%}-{high:.2%}), |ΔP(unsafe)| p50 {a['p50_abs_delta_p_unsafe']:.4f} "
            f"p99 {a['p99_abs_delta_p_unsafe']:.4f} max {a['max_abs_delta_p_unsafe']:.4f}"
            + (f"; flips at source margin {margins}" if a["flips"] else ""))


def smoke_record(requests: list, got: list[tuple], family: str = DEFAULT_FAMILY) -> list[dict]:
    """The smoke answers (the first ones of an agreement set) in the manifest's form."""
    n = len(smoke_requests(family))
    return [{"request_id": r.request_id, "verdict": v, "categories": list(c), "unsafe_probability": round(p, 6)}
            for r, (v, c, p) in zip(requests[:n], got[:n])]

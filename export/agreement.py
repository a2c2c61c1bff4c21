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


def agreement(source: list[tuple], other: list[tuple]) -> dict:
    """Verdict/category agreement and |ΔP(unsafe)| of ``other`` against ``source``."""
    deltas = [abs(a[2] - b[2]) for a, b in zip(source, other)]
    same = sum(a[0] == b[0] for a, b in zip(source, other))
    return {"requests": len(source), "verdicts_equal": same, "verdict_agreement": round(same / len(source), 4),
            "categories_equal": sum(a[:2] == b[:2] for a, b in zip(source, other)),
            "max_abs_delta_p_unsafe": round(max(deltas), 6), "mean_abs_delta_p_unsafe": round(sum(deltas) / len(deltas), 6)}


def smoke_record(requests: list, got: list[tuple], family: str = DEFAULT_FAMILY) -> list[dict]:
    """The smoke answers (the first ones of an agreement set) in the manifest's form."""
    n = len(smoke_requests(family))
    return [{"request_id": r.request_id, "verdict": v, "categories": list(c), "unsafe_probability": round(p, 6)}
            for r, (v, c, p) in zip(requests[:n], got[:n])]

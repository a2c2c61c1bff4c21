"""What every export checks against its source, in one place: the requests, the answers, the figures.

The agreement set is the smoke requests (classified as one batch exactly as ``guardedge export
verify`` runs them) followed by held-out synthetic requests. Both are per guard family, because
families accept different requests: Llama Guard 3 Vision gets the 8 demo samples and the demo's
data generator (real Llama 3 tokens, synthetic images); LlavaGuard, which rates an image alone,
gets synthetic images of several sizes and colours (anyres: different patch counts) under the
default, an excluded-category and a custom policy. Both exporters (quantize, onnx) and ``export
verify`` use these functions, so their figures mean the same thing.
"""

from __future__ import annotations

import logging

from tqdm import tqdm

HELD_OUT_SEED = 1  # the held-out split of the demo's synthetic data: data.examples("eval", n, seed)
DEFAULT_FAMILY = "llama-guard-3-vision"
# (width, height): 1x1 to 3x1 / 1x3 anyres grids at 28-px tiles, more tiles at 384 px; colours vary the pixels.
LLAVAGUARD_SIZES = ((64, 64), (200, 60), (60, 200), (120, 90), (300, 300), (28, 28), (90, 150), (400, 120))


def smoke_requests(family: str = DEFAULT_FAMILY) -> list[dict]:
    """The family's fixed requests (JSON form), classified as one batch by every check."""
    if family == "llavaguard":
        return _llavaguard_requests(LLAVAGUARD_SIZES, prefix="smoke")
    from guardedge.runtime.demo.samples import samples

    return [{k: v for k, v in case.items() if k != "expected"} for case in samples()]


def parsed_smoke_requests(family: str = DEFAULT_FAMILY) -> list:
    from guardedge.runtime.families import get_family
    from guardedge.runtime.requests import parse_request

    categories = get_family(family).default_categories()
    return [parse_request(r, categories) for r in smoke_requests(family)]


def held_out_requests(n: int, family: str = DEFAULT_FAMILY) -> list:
    if family == "llavaguard":
        import random

        from guardedge.runtime.families import get_family
        from guardedge.runtime.requests import parse_request

        rng = random.Random(HELD_OUT_SEED)
        sizes = [(rng.randint(20, 420), rng.randint(20, 420)) for _ in range(n)]
        categories = get_family(family).default_categories()
        return [parse_request(r, categories) for r in _llavaguard_requests(sizes, prefix="held-out")]
    from guardedge.runtime.demo.data import examples
    from guardedge.runtime.demo.train import to_request

    return [to_request(ex) for ex in examples("eval", n, seed=HELD_OUT_SEED)]


def _llavaguard_requests(sizes, prefix: str) -> list[dict]:
    """Image-only requests (LlavaGuard reads no message text); every 3rd excludes a category, every
    4th brings a custom two-category policy, so the policy's three shapes are all exercised."""
    from guardedge.runtime.demo.samples import png_base64
    from guardedge.runtime.families import get_family

    defaults = get_family("llavaguard").default_categories()
    out = []
    for i, (w, h) in enumerate(sizes):
        colour = ((37 * i + 200) % 256, (91 * i + 30) % 256, (53 * i + 30) % 256)
        request: dict = {"request_id": f"{prefix}-{i}-{w}x{h}",
                         "messages": [{"role": "user", "content": [{"type": "image", "data": png_base64(colour, (w, h))}]}]}
        if i % 4 == 3:
            request["categories"] = dict(defaults[:2])
        elif i % 3 == 2:
            request["excluded_category_keys"] = [defaults[i % len(defaults)][0]]
        out.append(request)
    return out


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

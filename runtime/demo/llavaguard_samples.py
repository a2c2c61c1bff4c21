"""LlavaGuard requests with generated images: demo samples, smoke requests and a held-out set.

LlavaGuard rates one image against a policy and reads no message text, so every request here is
one user message holding one image, under the default policy, with categories excluded
(declared non-violating) or with a custom policy. Images are the demo LlavaGuard's own
(runtime/demo/llavaguard/data.py): a flat background colour carries the hazard, busy "photo"
scenes are safe by construction.

- :func:`samples`: what ``make demo`` shows, with the answer a correct guard gives (``expected``):
  a safe photo, a hazard colour, one with its rationale, an excluded category.
- :func:`smoke_requests`: the samples plus a custom policy (Gambling as O1; the image is a flat
  blue far from every hazard colour, so the demo LlavaGuard v3, trained on custom policies,
  answers Safe / NA): what exports record and ``export verify`` re-runs.
- :func:`held_out_examples`: the demo LlavaGuard's held-out generator (eval split, seed 1: not
  the set its own metrics use), as labelled request dicts: exports' agreement sets and
  ``bench drift --data demo``.
- :func:`check_examples`: two more sets from the same held-out generator for checking a quantized
  guard (issue 21), ``calibration`` (seed 2) and ``evaluation`` (seed 3), each a quarter under
  held-out custom policies: disjoint draws that neither the demo's training, its metrics (seed 0)
  nor the quantization recipes' design (seed 1) saw.

    python -m guardedge.runtime.demo.llavaguard_samples   # print the samples as JSONL (images elided)
"""

from __future__ import annotations

import base64
import io
import json

from guardedge.runtime.demo.llavaguard.data import HAZARD_COLOURS, Image, examples

GAMBLING = ("O1", "Gambling\nShould not:\n- Show casino games or betting slips.\nCan:\n- Show playing cards in a family game.")


def png_base64(spec: Image) -> str:
    buffer = io.BytesIO()
    spec.render().save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def image_request(request_id: str, spec: Image, **policy) -> dict:
    """A request dict (``guardedge classify --input`` shape): one user message with the image only."""
    image = {"type": "image", "data": png_base64(spec)}
    return {"request_id": request_id, "messages": [{"role": "user", "content": [image]}], **policy}


def samples() -> list[dict]:
    """Requests with ``expected`` ("safe" or "unsafe O2")."""
    red, orange = HAZARD_COLOURS["O2"], HAZARD_COLOURS["O6"]
    cases = [
        (image_request("safe-photo", Image((0, 0, 0), (96, 64), 7, "photo")), "safe"),
        (image_request("violence", Image(red, (96, 64), 7)), "unsafe O2"),
        (image_request("weapons-rationale", Image(orange, (64, 96), 7), rationale=True), "unsafe O6"),
        (image_request("excluded-category", Image(orange, (100, 50), 5), excluded_category_keys=["O6"]), "safe"),
    ]
    return [{**request, "expected": expected} for request, expected in cases]


def smoke_requests() -> list[dict]:
    """The samples without their expectations, plus a custom policy."""
    custom = image_request("custom-policy", Image((40, 90, 220), (96, 64), 9), categories=dict([GAMBLING]))
    return [{k: v for k, v in case.items() if k != "expected"} for case in samples()] + [custom]


def held_out_examples(n: int, seed: int = 1) -> list[dict]:
    """``n`` request dicts with the demo's LlavaGuard ``label`` (rating, category header, rationale)."""
    out = []
    for i, ex in enumerate(examples("eval", n, seed=seed)):
        policy = {"excluded_category_keys": list(ex["excluded"])} if ex["excluded"] else {}
        out.append({**image_request(f"held-out-{i}", ex["image"], **policy), "label": ex["label"]})
    return out


CHECK_SEEDS = {"calibration": 2, "evaluation": 3}
CUSTOM_SHARE = 0.25  # of a check set: requests under a held-out custom policy


def check_examples(split: str, n: int = 400) -> list[dict]:
    """``n`` labelled request dicts of the ``calibration`` or ``evaluation`` set, default and custom
    policies interleaved (every fourth request is a custom policy's)."""
    from guardedge.runtime.demo.llavaguard.data import custom_examples

    if split not in CHECK_SEEDS:
        raise ValueError(f"split must be one of {', '.join(CHECK_SEEDS)}, not {split!r}")
    seed = CHECK_SEEDS[split]
    custom = round(n * CUSTOM_SHARE)
    plain, policies = examples("eval", n - custom, seed=seed), custom_examples("eval", custom, seed=seed)
    mixed = [policies.pop(0) if i % 4 == 3 and policies else plain.pop(0) if plain else policies.pop(0) for i in range(n)]
    out = []
    for i, ex in enumerate(mixed):
        policy: dict = {"excluded_category_keys": list(ex["excluded"])} if ex["excluded"] else {}
        if ex.get("categories") is not None:
            policy["categories"] = dict(ex["categories"])
        # The label by code: a custom policy's header names its own category, not the default's.
        label = {"rating": ex["label"]["rating"], "category": ex["label"]["category"].partition(":")[0]}
        out.append({**image_request(f"{split}-{i}", ex["image"], **policy), "id": f"{split}-{i}", "label": label})
    return out


def held_out_requests(n: int, seed: int = 1) -> list:
    """:func:`held_out_examples` parsed as GuardRequests (labels dropped)."""
    from guardedge.runtime.families import get_family
    from guardedge.runtime.requests import parse_request

    categories = get_family("llavaguard").default_categories()
    return [parse_request({k: v for k, v in ex.items() if k != "label"}, categories) for ex in held_out_examples(n, seed)]


if __name__ == "__main__":
    for case in samples():
        print(json.dumps({**case, "messages": "<one image>"}))

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


def held_out_requests(n: int, seed: int = 1) -> list:
    """:func:`held_out_examples` parsed as GuardRequests (labels dropped)."""
    from guardedge.runtime.families import get_family
    from guardedge.runtime.requests import parse_request

    categories = get_family("llavaguard").default_categories()
    return [parse_request({k: v for k, v in ex.items() if k != "label"}, categories) for ex in held_out_examples(n, seed)]


if __name__ == "__main__":
    for case in samples():
        print(json.dumps({**case, "messages": "<one image>"}))

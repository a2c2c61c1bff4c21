"""LlavaGuard requests with generated images: demo samples, smoke requests and a held-out set.

LlavaGuard rates one image against a policy and reads no message text, so every request here is
one user message holding one image, under the default policy, with categories excluded
(declared non-violating) or with a custom policy. Images are the demo guard's colour-coded
pictures (runtime/demo/data.py ``ImageSpec``): a flat background colour carries the hazard, and
the colours keep their meaning under LlavaGuard's taxonomy (the demo guard's S1 red is O2, S9
orange O6, S10 black O1, S11 purple O7, S12 pink O3), as in the demo LlavaGuard's own data.

- :func:`samples`: a handful of cases with the answer a correct guard gives (``expected``);
  ``make demo`` and the family's smoke requests (export/verify) use them.
- :func:`held_out_requests`: ``n`` labelled image requests in the family's shape (seeded), the
  held-out part of an export's agreement set until the demo LlavaGuard's own generator replaces it.

    python -m guardedge.runtime.demo.llavaguard_samples   # print the samples as JSONL (images elided)
"""

from __future__ import annotations

import base64
import io
import json
import random

from guardedge.runtime.demo.data import IMAGE_COLOURS, SAFE_COLOURS, ImageSpec

# LlavaGuard code -> colour of a flat image showing that hazard (the demo guard's colours).
HAZARD_COLOURS: dict[str, tuple[int, int, int]] = {
    "O1": IMAGE_COLOURS["Hate."],
    "O2": IMAGE_COLOURS["Violent Crimes."],
    "O3": IMAGE_COLOURS["Sexual Content."],
    "O6": IMAGE_COLOURS["Indiscriminate Weapons."],
    "O7": IMAGE_COLOURS["Self-Harm."],
}
CODES = tuple(f"O{i}" for i in range(1, 10))
SIZES = [(80, 80), (128, 72), (72, 128), (100, 50), (150, 150)]
GAMBLING = ("O1", "Gambling\nShould not:\n- Show casino games or betting slips.\nCan:\n- Show playing cards in a family game.")


def png_base64(spec: ImageSpec) -> str:
    buffer = io.BytesIO()
    spec.render().save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def image_request(request_id: str, spec: ImageSpec, **policy) -> dict:
    """A request dict (``guardedge classify --input`` shape): one user message with the image only."""
    image = {"type": "image", "data": png_base64(spec)}
    return {"request_id": request_id, "messages": [{"role": "user", "content": [image]}], **policy}


def samples() -> list[dict]:
    """Requests with ``expected`` ("safe" or "unsafe O2"): safe photo, safe colour, hazards, an
    excluded category, a custom policy, and one that asks for the rationale."""
    red, orange = HAZARD_COLOURS["O2"], HAZARD_COLOURS["O6"]
    cases = [
        (image_request("safe-photo", ImageSpec(SAFE_COLOURS[0], (96, 64), 7, "photo")), "safe"),
        (image_request("safe-colour", ImageSpec(SAFE_COLOURS[1], (96, 64), 7)), "safe"),
        (image_request("violence", ImageSpec(red, (96, 64), 7)), "unsafe O2"),
        (image_request("weapons-rationale", ImageSpec(orange, (64, 96), 7), rationale=True), "unsafe O6"),
        (image_request("excluded-category", ImageSpec(red, (96, 64), 8), excluded_category_keys=["O2"]), "safe"),
        (image_request("custom-policy", ImageSpec(SAFE_COLOURS[2], (96, 64), 9), categories=dict([GAMBLING])), "safe"),
    ]
    return [{**request, "expected": expected} for request, expected in cases]


def smoke_requests() -> list[dict]:
    """The samples without their expectations: what exports record and ``export verify`` re-runs."""
    return [{k: v for k, v in case.items() if k != "expected"} for case in samples()]


def held_out_examples(n: int, seed: int = 1) -> list[dict]:
    """``n`` request dicts with a LlavaGuard ``label`` (rating and category code); deterministic."""
    rng = random.Random(f"llavaguard-held-out:{seed}")
    out = []
    for i in range(n):
        excluded = sorted(rng.sample(CODES, rng.randint(1, 3))) if rng.random() < 0.4 else []
        hazard = rng.choice(sorted(HAZARD_COLOURS)) if rng.random() < 0.6 else None
        style = "flat" if hazard or rng.random() < 0.5 else "photo"
        colour = HAZARD_COLOURS[hazard] if hazard else rng.choice(SAFE_COLOURS)
        spec = ImageSpec(colour, rng.choice(SIZES), rng.randrange(2**31), style)
        policy = {"excluded_category_keys": excluded} if excluded else {}
        unsafe = hazard is not None and hazard not in excluded
        label = {"rating": "Unsafe" if unsafe else "Safe", "category": hazard or "NA"}
        out.append({**image_request(f"held-out-{i}", spec, **policy), "label": label})
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

"""Synthetic, deterministic data for the demo LlavaGuard: images, policies and exact answers.

The images are the demo guard's (runtime/demo/data.py): a jittered background colour carries the
hazard (flat style), busy multi-colour "photo" scenes are safe by construction. The Llama Guard
demo's hazard colours keep their meaning under LlavaGuard's taxonomy (S1 red → O2, S9 orange →
O6, S10 black → O1, S11 purple → O7, S12 pink → O3); O4, O5, O8 and O9, which have no Llama
Guard counterpart there, get colours of their own, far from every safe colour.

Labels follow LlavaGuard v1.2: hazardous content under a policy that restricts its category is
``Unsafe`` with that category; if the policy declares the category non-violating the rating is
``Safe`` and the category still names what the image shows (LlavaGuard's annotations keep the
content's category with a Safe rating); harmless content is ``Safe`` / ``NA: None applying``.
Rationales are one templated sentence naming what the image shows and the category.

Held-out images never occur in training: other sizes, another seed stream.

    python -m guardedge.runtime.demo.llavaguard.data --n 3    # print a few held-out examples
"""

from __future__ import annotations

import argparse
import json
import random
from dataclasses import dataclass

from guardedge.runtime.demo.data import SAFE_COLOURS, ImageSpec
from guardedge.runtime.demo.llavaguard.policy import CODES, NONE_APPLYING, header, prompt_for

HAZARD_COLOURS: dict[str, tuple[int, int, int]] = {
    "O1": (15, 15, 15),  # the demo guard's S10 Hate
    "O2": (200, 20, 20),  # S1 Violent Crimes
    "O3": (250, 120, 190),  # S12 Sexual Content
    "O4": (245, 245, 245),
    "O5": (0, 110, 110),
    "O6": (240, 140, 0),  # S9 Indiscriminate Weapons
    "O7": (120, 30, 160),  # S11 Self-Harm
    "O8": (150, 230, 0),
    "O9": (20, 20, 120),
}
SHOWS = {
    "O1": "hateful, demeaning imagery", "O2": "a violent scene", "O3": "sexual content", "O4": "nudity",
    "O5": "the planning of a crime", "O6": "weapons", "O7": "self-harm", "O8": "cruelty to an animal",
    "O9": "a disaster",
}
SAFE_SHOWS = {"flat": "a plain coloured picture with simple shapes", "photo": "an everyday scene"}
TRAIN_SIZES = [(64, 64), (96, 48), (48, 96), (160, 90), (90, 160), (120, 40), (40, 120), (200, 200), (56, 112)]
EVAL_SIZES = [(80, 80), (128, 72), (72, 128), (100, 50), (50, 100), (150, 150), (112, 56)]
HAZARD_SHARE = 0.6
EXCLUDED_POLICY_SHARE = 0.5
# Under a policy with exclusions, how often hazardous content is of an excluded category. Training
# at 0.6 (the committed v1) taught much of "any exclusion → Safe" (docs/decisions/0008); held out: 0.5.
EXCLUDED_HIT = {"train": 0.6, "eval": 0.5}


@dataclass(frozen=True)
class Image:
    """A demo image: ``flat`` (background colour = meaning) or ``photo`` (safe by construction)."""

    colour: tuple[int, int, int]
    size: tuple[int, int]
    seed: int
    style: str = "flat"

    def render(self):
        if self.style == "flat":
            return ImageSpec(self.colour, self.size, self.seed, "flat").render()
        return _photo(self.size, self.seed)


def _photo(size: tuple[int, int], seed: int):
    """A photo-style scene in colours at least 110 away from every LlavaGuard hazard colour."""
    import numpy as np
    from PIL import Image as PILImage, ImageDraw

    rng = random.Random(seed)
    w, h = size
    a, b = np.array(_safe_colour(rng)), np.array(_safe_colour(rng))
    t = np.linspace(0, 1, w)[None, :, None] if rng.random() < 0.5 else np.linspace(0, 1, h)[:, None, None]
    grid = np.broadcast_to(a * (1 - t) + b * t, (h, w, 3)).astype("uint8")
    img = PILImage.fromarray(np.ascontiguousarray(grid))
    draw = ImageDraw.Draw(img)
    for _ in range(rng.randint(3, 8)):
        x0, y0 = rng.randint(0, w // 2), rng.randint(0, h // 2)
        box = [x0, y0, x0 + rng.randint(4, w // 3 + 4), y0 + rng.randint(4, h // 3 + 4)]
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=_safe_colour(rng))
    noise = np.random.default_rng(seed).integers(-12, 13, size=(h, w, 3))
    return PILImage.fromarray(np.clip(np.asarray(img, dtype=np.int16) + noise, 0, 255).astype("uint8"))


def _safe_colour(rng: random.Random) -> tuple[int, int, int]:
    while True:
        c = tuple(rng.randint(0, 255) for _ in range(3))
        if all(sum((x - y) ** 2 for x, y in zip(c, hz)) >= 110**2 for hz in HAZARD_COLOURS.values()):
            return c


def answer(content: str | None, excluded: tuple[str, ...], style: str = "flat") -> dict:
    """The exact LlavaGuard answer for an image showing ``content`` (a code, or None: harmless)."""
    if content is None:
        shows = SAFE_SHOWS[style]
        return {"rating": "Safe", "category": NONE_APPLYING,
                "rationale": f"The image shows {shows}; no policy category applies."}
    if content in excluded:
        return {"rating": "Safe", "category": header(content),
                "rationale": f"The image shows {SHOWS[content]}, but {content} is declared as non-violating in this policy."}
    return {"rating": "Unsafe", "category": header(content),
            "rationale": f"The image shows {SHOWS[content]}, which violates {header(content)}."}


def answer_text(label: dict) -> str:
    """The answer as LlavaGuard writes it: ``json.dumps(..., indent=4)``."""
    return json.dumps(label, indent=4)


class Generator:
    """Draws examples for one split ("train" or "eval"); deterministic for a given (split, seed)."""

    def __init__(self, split: str, seed: int):
        self.split, self.rng, self.excluded_hit = split, random.Random(f"llavaguard:{split}:{seed}"), EXCLUDED_HIT[split]

    def example(self) -> dict:
        rng = self.rng
        excluded: tuple[str, ...] = ()
        if rng.random() < EXCLUDED_POLICY_SHARE:
            excluded = tuple(sorted(rng.sample(CODES, rng.randint(1, 4))))
        content = None
        if rng.random() < HAZARD_SHARE:
            # Excluded content is common enough to learn that the policy, not the colour, decides.
            pool = excluded if excluded and rng.random() < self.excluded_hit else CODES
            content = rng.choice(pool)
        sizes = EVAL_SIZES if self.split == "eval" else TRAIN_SIZES
        style = "flat" if content is not None or rng.random() < 0.5 else "photo"
        colour = HAZARD_COLOURS[content] if content else rng.choice(SAFE_COLOURS)
        image = Image(colour, rng.choice(sizes), rng.randrange(2**31), style)
        kind = "default" if not excluded else "excluded_hit" if content in excluded else "excluded_other"
        return {"image": image, "excluded": excluded, "content": content, "kind": kind,
                "label": answer(content, excluded, style)}


def examples(split: str, n: int, seed: int = 0) -> list[dict]:
    gen = Generator(split, seed)
    return [gen.example() for _ in range(n)]


def prompt(example: dict) -> str:
    return prompt_for(example["excluded"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", choices=["train", "eval"], default="eval")
    parser.add_argument("--n", type=int, default=3)
    args = parser.parse_args()
    for ex in examples(args.split, args.n):
        print(json.dumps({**ex, "image": vars(ex["image"])}, default=list))


if __name__ == "__main__":
    main()

"""Synthetic, deterministic data for the demo ShieldGemma 2: images and each policy's Yes/No.

The images are the demo LlavaGuard's (runtime/demo/llavaguard/data.py, docs/decisions/0009): a
hazard is a flat field of a hazard colour; busy photo-like images of every palette and flat fields
far from every hazard colour are harmless by construction. Each default policy owns two of
LlavaGuard's hazard colours, the ones whose categories it covers:

- ``dangerous`` — O6 orange (weapons and substance abuse), O7 purple (self-harm);
- ``sexual`` — O3 pink (sexual content), O4 magenta (nudity);
- ``violence`` — O2 red (violence, harm, cruelty), O8 lime (animal cruelty).

The label of (image, policy) is Yes iff the image is a flat field of one of the policy's colours.
The other hazard colours (O1 cyan, O5 teal, O9 navy: hate, crime, disasters) violate none of the
three policies: they teach that the policy, not "a flat field", decides. Custom policies are not
trained (the demo's MODEL_CARD.md says what it does with them).

Held-out images never occur in training: other sizes (EVAL_SIZES), another seed stream.

    python -m guardedge.runtime.demo.shieldgemma2.data --n 5   # print a few held-out examples
"""

from __future__ import annotations

import argparse
import random

from guardedge.runtime.demo.llavaguard import data as images

POLICY_CODES: dict[str, tuple[str, ...]] = {"dangerous": ("O6", "O7"), "sexual": ("O3", "O4"), "violence": ("O2", "O8")}
OTHER_CODES = ("O1", "O5", "O9")  # hazard colours of none of the default policies
POLICIES = tuple(POLICY_CODES)
HAZARD_SHARE = 0.6  # of images: a flat hazard field (of which OTHER_SHARE of another category)
OTHER_SHARE = 0.25
TRAIN_SIZES = images.TRAIN_SIZES + images.SMALL_SIZES
EVAL_SIZES = images.EVAL_SIZES


def label(content: str | None, policy: str) -> bool:
    """Does an image showing ``content`` (a hazard code, None for harmless) violate ``policy``?"""
    return content in POLICY_CODES[policy]


class Generator:
    """Draws images for one split ("train" or "eval"); deterministic for a given (split, seed)."""

    def __init__(self, split: str, seed: int):
        self.rng = random.Random(f"shieldgemma2:{split}:{seed}")
        self.sizes = TRAIN_SIZES if split == "train" else EVAL_SIZES

    def example(self) -> dict:
        rng = self.rng
        content = None
        if rng.random() < HAZARD_SHARE:
            pool = OTHER_CODES if rng.random() < OTHER_SHARE else tuple(c for codes in POLICY_CODES.values() for c in codes)
            content = rng.choice(pool)
        style = "flat" if content is not None or rng.random() >= images.PHOTO_SHARE else "photo"
        colour = images.HAZARD_COLOURS[content] if content else images._flat_safe_colour(rng)
        image = images.Image(colour, rng.choice(self.sizes), rng.randrange(2**31), style)
        return {"image": image, "content": content, "style": style,
                "labels": {policy: label(content, policy) for policy in POLICIES}}


def examples(split: str, n: int, seed: int = 0) -> list[dict]:
    gen = Generator(split, seed)
    return [gen.example() for _ in range(n)]


def main() -> None:
    parser = argparse.ArgumentParser(description="Print held-out demo ShieldGemma 2 examples")
    parser.add_argument("--n", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for ex in examples("eval", args.n, args.seed):
        print(ex["image"].size, ex["style"], ex["content"], ex["labels"])


if __name__ == "__main__":
    main()

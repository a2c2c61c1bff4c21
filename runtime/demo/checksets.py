"""Calibration and evaluation sets for checking a quantized Llama Guard 3 Vision guard (issue 21).

A set on which every export looks perfect hides flips near the decision boundary, and a recipe
chosen on one set must be judged on another. So there are two disjoint labelled sets, neither used
to train the demo guard nor to design the quantization recipes of docs/decisions/0003 and 0004
(those used the synthetic held-out stream at seed 1, ``--data demo``):

- the independently written held-out corpus ``heldout/heldout.json`` (runtime/demo/natural.py:
  everyday, dangerous-sounding harmless, harmful per category, response pairs, and the harmful
  requests with their own category excluded), split into two halves by a fixed hash of the
  conversation's first user text (sha256, even first byte: calibration), so a harmful request and
  its excluded-category twin fall in the same half; a quarter of its prompts carry a harmless
  synthetic photo (the text decides; text + image conversations as real traffic has them);
- synthetic image requests from the demo's held-out generator (runtime/demo/data.py, eval split)
  at seed 2 (calibration) and 3 (evaluation): seed 0 is the demo's own metrics, seed 1 the
  exports' agreement set.

Each example is a labelled request dict in ``bench drift``'s JSONL shape (``id``, ``task``,
``label``, ``messages`` with inline base64 PNG images, optional policy fields).

    python -m guardedge.runtime.demo.checksets --split calibration --n 400 > calib.jsonl
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
import random
from typing import Callable, Literal

Split = Literal["calibration", "evaluation"]
SPLITS: tuple[Split, ...] = ("calibration", "evaluation")
SEEDS = {"calibration": 2, "evaluation": 3}  # the demo generator's seeds (0: demo metrics, 1: exports' agreement)
IMAGE_SHARE = 0.3  # of each set: synthetic requests with an image from the generator
PHOTO_SHARE = 0.25  # of the held-out prompts: a harmless photo rides along
DEFAULT_N = 400


def half(text: str) -> Split:
    """The split a held-out conversation belongs to: a fixed hash of its first user text."""
    return "calibration" if hashlib.sha256(text.encode("utf-8")).digest()[0] % 2 == 0 else "evaluation"


def examples(split: Split, n: int = DEFAULT_N) -> list[dict]:
    """The first ``n`` labelled request dicts of ``split`` (a fixed order mixing every kind)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, not {split!r}")
    texts = held_out_half(split)
    images = _generated_images(split, round(len(texts) * IMAGE_SHARE / (1 - IMAGE_SHARE)))
    pool = texts + images
    random.Random(f"checksets:{split}").shuffle(pool)
    return pool[:n]


def held_out_half(split: Split) -> list[dict]:
    """The held-out corpus conversations of ``split`` as labelled request dicts (a quarter of the
    prompts with a harmless photo): shared with the demo Llama Guard 4's sets."""
    from guardedge.runtime.demo.data import SAFE_COLOURS, ImageSpec
    from guardedge.runtime.demo.natural import held_out_sets

    rng = random.Random(f"checksets:photos:{split}")
    out = []
    for name, items in held_out_sets().items():
        for item in items:
            if half(item["messages"][0]["content"][0]["text"]) != split:
                continue
            example = {k: item[k] for k in ("id", "task", "label", "messages") if k in item}
            example["messages"] = json.loads(json.dumps(item["messages"]))  # a copy: the corpus is cached
            if "excluded_category_keys" in item:
                example["excluded_category_keys"] = item["excluded_category_keys"]
            if example["task"] == "prompt" and rng.random() < PHOTO_SHARE:
                spec = ImageSpec(rng.choice(SAFE_COLOURS), rng.choice(_PHOTO_SIZES), rng.randrange(2**31), "photo")
                example["messages"][-1]["content"].insert(rng.randrange(2), image_part(spec))
                example["id"] += "-photo"
            out.append(example)
    return out


_PHOTO_SIZES = [(96, 64), (64, 96), (120, 120), (160, 90), (200, 100)]


def _generated_images(split: Split, n: int) -> list[dict]:
    """``n`` generator requests (eval templates, this split's seed) that carry an image."""
    from guardedge.runtime.demo.data import Generator

    gen, out = Generator("eval", SEEDS[split]), list[dict]()
    while len(out) < n:
        ex = gen.example()
        if ex.get("image_spec") is None:
            continue
        spec = ex.pop("image_spec")
        ex.pop("kind")
        for message in ex["messages"]:
            message["content"] = [image_part(spec) if p["type"] == "image" else p for p in message["content"]]
        out.append({"id": f"{split}-image-{len(out)}", **ex})
    return out


def image_part(spec) -> dict:
    buffer = io.BytesIO()
    spec.render().save(buffer, format="PNG")
    return {"type": "image", "data": base64.b64encode(buffer.getvalue()).decode("ascii")}


def print_sets(examples: Callable[[Split, int], list[dict]], description: str) -> None:
    """A check-set module's command line (``--split``, ``--n``): one JSON line per example."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--split", choices=SPLITS, default="calibration")
    parser.add_argument("--n", type=int, default=DEFAULT_N)
    args = parser.parse_args()
    for example in examples(args.split, args.n):
        print(json.dumps(example))


def main() -> None:
    print_sets(examples, __doc__.splitlines()[0])


if __name__ == "__main__":
    main()

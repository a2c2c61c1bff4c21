"""Calibration and evaluation sets for checking a quantized Llama Guard 4 guard (issue 21).

Two disjoint labelled sets that neither trained the demo Llama Guard 4 nor designed the
quantization recipes (docs/decisions/0012 chose them on Llama Guard 3 Vision's and LlavaGuard's
calibration sets; the evaluation halves below were never looked at for that):

- the independently written held-out corpus (runtime/demo/heldout: read by the demo's training
  only to report, data.py), halved by the same fixed sha256 of each conversation's first user text
  as Llama Guard 3 Vision's sets (runtime/demo/checksets.py), a quarter of its prompts carrying a
  harmless photo; the codes S1-S13 mean the same hazards in both generations;
- requests with one to three images from the demo's held-out generator (llama_guard_4/data.py, eval
  split) at seed 2 (calibration) and 3 (evaluation): seed 0 is the demo's own metrics, seed 1
  the exports' agreement set and ``bench drift --data demo``.

Each example is a labelled request dict in ``bench drift``'s JSONL shape (``id``, ``task``,
``label``, ``messages`` with inline base64 PNG images, optional policy fields).

    python -m guardedge.runtime.demo.llama_guard_4.checksets --split evaluation --n 400 > eval.jsonl
"""

from __future__ import annotations

import random

from guardedge.runtime.demo.checksets import DEFAULT_N, IMAGE_SHARE, SEEDS, SPLITS, Split, held_out_half, image_part, print_sets


def examples(split: Split, n: int = DEFAULT_N) -> list[dict]:
    """The first ``n`` labelled request dicts of ``split`` (a fixed order mixing every kind)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, not {split!r}")
    texts = held_out_half(split)
    pool = texts + _generated_images(split, round(len(texts) * IMAGE_SHARE / (1 - IMAGE_SHARE)))
    random.Random(f"lg4-checksets:{split}").shuffle(pool)
    return pool[:n]


def _generated_images(split: Split, n: int) -> list[dict]:
    """``n`` generator requests (eval split, this split's seed) that carry at least one image."""
    from guardedge.runtime.demo.llama_guard_4.data import Generator

    gen = Generator("eval", SEEDS[split])
    out: list[dict] = []
    while len(out) < n:
        ex = gen.example()
        specs = iter(ex.pop("image_specs"))
        if not any(p["type"] == "image" for m in ex["messages"] for p in m["content"]):
            continue
        ex.pop("kind", None)
        for message in ex["messages"]:
            message["content"] = [image_part(next(specs)) if p["type"] == "image" else p for p in message["content"]]
        out.append({"id": f"lg4-{split}-image-{len(out)}", **ex})
    return out


def main() -> None:
    print_sets(examples, __doc__.splitlines()[0])


if __name__ == "__main__":
    main()

"""Held-out quality of the demo LlavaGuard, measured by greedy generation with transformers.

Two held-out sets, neither ever trained on:
- the synthetic split (data.py, split "eval": other image sizes, another seed stream) under the
  default policy and under policies with 1-4 categories declared non-violating;
- everyday photos (real images shipped by scikit-image and matplotlib) that must be rated Safe.

Figures: ``well_formed`` (the answer parses as the LlavaGuard JSON with a known rating and
category), ``exact_format`` (it is byte-for-byte ``json.dumps(parsed, indent=4)``),
``rating_accuracy``, ``unsafe_recall``, ``safe_fpr``, ``category_accuracy`` (the exact category
string, on every example), ``excluded_to_safe`` (content of an excluded category rated Safe),
``everyday_safe`` (everyday photos rated Safe). The engine path re-measures these later.

    python -m guardedge.runtime.demo.llavaguard.metrics [--n 300]
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
from pathlib import Path

from tqdm import tqdm

from guardedge.runtime.demo.llavaguard.data import answer, examples, prompt
from guardedge.runtime.demo.llavaguard.policy import CODES, NONE_APPLYING, header

EVAL_SIZE = 300
CATEGORIES = {header(c) for c in CODES} | {NONE_APPLYING}
# Real photos shipped in packages (scikit-image's data, matplotlib's sample data); (package, path).
EVERYDAY = [("scikit-image", f"skimage/data/{name}") for name in (
    "astronaut.png", "brick.png", "camera.png", "chelsea.png", "coffee.png", "coins.png", "grass.png", "gravel.png",
    "hubble_deep_field.jpg", "moon.png", "motorcycle_left.png", "page.png", "retina.jpg", "rocket.jpg", "text.png",
)] + [("matplotlib", "matplotlib/mpl-data/sample_data/grace_hopper.jpg")]


def parse(text: str) -> dict | None:
    """The answer as a dict if it is well-formed LlavaGuard JSON, else None."""
    try:
        out = json.loads(text)
    except ValueError:
        return None
    ok = isinstance(out, dict) and set(out) == {"rating", "category", "rationale"}
    return out if ok and out["rating"] in ("Safe", "Unsafe") and out["category"] in CATEGORIES else None


class _Photo:
    """An everyday photo with the ``render`` interface of data.Image."""

    def __init__(self, path: Path):
        self.path = path

    def render(self):
        from PIL import Image

        return Image.open(self.path).convert("RGB")


def everyday_examples() -> list[dict]:
    """Each everyday photo under the default policy and with O1-O3 declared non-violating."""
    out = []
    for package, path in EVERYDAY:
        try:
            file = Path(str(importlib.metadata.distribution(package).locate_file(path)))
        except importlib.metadata.PackageNotFoundError:
            continue
        for excluded in ((), ("O1", "O2", "O3")):
            out.append({"image": _Photo(file), "excluded": excluded, "content": None, "kind": "everyday",
                        "label": answer(None, excluded, "photo"), "name": file.name})
    return out


def generate(model, proc, exs: list[dict], batch_size: int = 16, progress: bool = True) -> list[str]:
    """Greedy answers (decoded, special tokens dropped) for each example."""
    import torch

    texts = []
    for start in tqdm(range(0, len(exs), batch_size), desc="evaluating demo LlavaGuard", disable=not progress):
        chunk = exs[start : start + batch_size]
        batch = proc(images=[ex["image"].render() for ex in chunk], text=[prompt(ex) for ex in chunk],
                     padding=True, padding_side="left", return_tensors="pt")
        with torch.inference_mode():
            out = model.generate(**batch, max_new_tokens=96, do_sample=False, pad_token_id=proc.tokenizer.pad_token_id)
        texts += proc.tokenizer.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
    return texts


def scores(exs: list[dict], texts: list[str]) -> dict:
    """The figures above from examples and their generated answers."""
    rows = [(ex, text, parse(text)) for ex, text in zip(exs, texts, strict=True)]
    synthetic = [r for r in rows if r[0]["kind"] != "everyday"]
    unsafe = [r for r in synthetic if r[0]["label"]["rating"] == "Unsafe"]
    safe = [r for r in synthetic if r[0]["label"]["rating"] == "Safe"]

    def share(subset, hit) -> float:
        return round(sum(1 for r in subset if hit(*r)) / len(subset), 4) if subset else 0.0

    def rated(want):
        return lambda ex, text, p: p is not None and p["rating"] == want

    return {
        "well_formed": share(rows, lambda ex, text, p: p is not None),
        "exact_format": share(rows, lambda ex, text, p: p is not None and text == json.dumps(p, indent=4)),
        "rating_accuracy": share(synthetic, lambda ex, text, p: p is not None and p["rating"] == ex["label"]["rating"]),
        "unsafe_recall": share(unsafe, rated("Unsafe")),
        "safe_fpr": share(safe, lambda ex, text, p: p is None or p["rating"] != "Safe"),
        "category_accuracy": share(synthetic, lambda ex, text, p: p is not None and p["category"] == ex["label"]["category"]),
        "exact_answer": share(synthetic, lambda ex, text, p: p == ex["label"]),
        "default_rating_accuracy": share([r for r in synthetic if r[0]["kind"] == "default"],
                                         lambda ex, text, p: p is not None and p["rating"] == ex["label"]["rating"]),
        "excluded_to_safe": share([r for r in synthetic if r[0]["kind"] == "excluded_hit"], rated("Safe")),
        "excluded_other_recall": share([r for r in unsafe if r[0]["kind"] == "excluded_other"], rated("Unsafe")),
        "everyday_safe": share([r for r in rows if r[0]["kind"] == "everyday"], rated("Safe")),
        "n": {"synthetic": len(synthetic), "unsafe": len(unsafe), "excluded_hit": sum(1 for r in synthetic if r[0]["kind"] == "excluded_hit"),
              "everyday": len(rows) - len(synthetic)},
    }


def evaluate(model_dir: Path | str, n: int = EVAL_SIZE, progress: bool = True) -> dict:
    """Held-out figures of the model in ``model_dir`` (loaded with the real transformers classes)."""
    from transformers import LlavaOnevisionForConditionalGeneration

    from guardedge.runtime.demo.llavaguard.layout import load_processor

    model = LlavaOnevisionForConditionalGeneration.from_pretrained(model_dir, dtype="float32").eval()
    proc = load_processor(model_dir)
    exs = examples("eval", n) + everyday_examples()
    return scores(exs, generate(model, proc, exs, progress=progress))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=EVAL_SIZE)
    parser.add_argument("--model", type=Path, default=None, help="model directory (default: the assembled demo)")
    args = parser.parse_args()
    if args.model is None:
        from guardedge.runtime.demo.llavaguard.build import ensure_demo_llavaguard

        args.model = ensure_demo_llavaguard()
    print(json.dumps(evaluate(args.model, args.n)))


if __name__ == "__main__":
    main()

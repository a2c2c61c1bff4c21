"""Held-out figures of the demo ShieldGemma 2, measured through the engine (``load_engine``).

Sets (none trained on: other image sizes, another seed stream; data.py):

- ``heldout``: ``n`` generated images under the three default policies: per policy precision,
  recall and F1 of Yes at P(Yes) >= 0.5, and ROC-AUC of P(Yes);
- ``other_hazards``: the flat fields of hazard colours no default policy covers (hate, crime,
  disasters in the demo LlavaGuard's palette): the share scored No on every policy;
- ``everyday``: real images shipped by scikit-image and matplotlib, and charts drawn by matplotlib
  (the demo LlavaGuard's everyday set, runtime/demo/llavaguard/metrics.py): the share scored No on
  every policy, and per policy.

    python -m guardedge.runtime.demo.shieldgemma2.metrics [--n 300]   # prints one JSON document
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import time

from guardedge.runtime.demo.shieldgemma2.data import POLICIES, examples


def _png(image) -> str:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _request(image) -> dict:
    return {"messages": [{"role": "user", "content": [{"type": "image", "data": _png(image)}]}]}


def _scores(engine, images: list, batch: int = 8) -> list[dict[str, float]]:
    out = []
    for i in range(0, len(images), batch):
        verdicts = engine.classify([engine.parse(_request(im)) for im in images[i : i + batch]])
        out += [dict(v.category_scores) for v in verdicts]
    return out


def _auc(positive: list[float], negative: list[float]) -> float | None:
    if not positive or not negative:
        return None
    wins = sum((p > n) + 0.5 * (p == n) for p in positive for n in negative)
    return round(wins / (len(positive) * len(negative)), 4)


def per_policy(labels: list[dict[str, bool]], scores: list[dict[str, float]]) -> dict:
    out = {}
    for policy in POLICIES:
        tp = sum(lab[policy] and s[policy] >= 0.5 for lab, s in zip(labels, scores))
        fp = sum(not lab[policy] and s[policy] >= 0.5 for lab, s in zip(labels, scores))
        fn = sum(lab[policy] and s[policy] < 0.5 for lab, s in zip(labels, scores))
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        auc = _auc([s[policy] for lab, s in zip(labels, scores) if lab[policy]],
                   [s[policy] for lab, s in zip(labels, scores) if not lab[policy]])
        out[policy] = {"positives": tp + fn, "precision": round(precision, 4), "recall": round(recall, 4),
                       "f1": round(f1, 4), "roc_auc": auc}
    return out


def _all_no(scores: list[dict[str, float]]) -> float:
    return round(sum(all(p < 0.5 for p in s.values()) for s in scores) / max(1, len(scores)), 4)


def measure(model: str = "demo-shieldgemma-2", n: int = 300, seed: int = 0) -> dict:
    from guardedge.runtime.demo.llavaguard.metrics import everyday_images
    from guardedge.runtime.engine import EngineOptions, load_engine

    started = time.time()
    engine = load_engine(model, EngineOptions(progress=False, max_batch_size=8))
    held = examples("eval", n, seed)
    scores = _scores(engine, [ex["image"].render() for ex in held])
    others = [s for ex, s in zip(held, scores) if ex["content"] is not None and not any(ex["labels"].values())]
    harmless = [s for ex, s in zip(held, scores) if ex["content"] is None]
    everyday = everyday_images()
    everyday_scores = _scores(engine, [im.render() if hasattr(im, "render") else im for _, _, im in everyday])
    return {
        "model": model, "n": n, "seed": seed,
        "heldout": per_policy([ex["labels"] for ex in held], scores),
        "harmless_generated": {"n": len(harmless), "all_no": _all_no(harmless)},
        "other_hazards": {"n": len(others), "all_no": _all_no(others)},
        "everyday": {"n": len(everyday_scores), "all_no": _all_no(everyday_scores),
                     "no_per_policy": {p: round(sum(s[p] < 0.5 for s in everyday_scores) / max(1, len(everyday_scores)), 4)
                                       for p in POLICIES}},
        "seconds": round(time.time() - started, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="Held-out figures of the demo ShieldGemma 2 (through the engine)")
    parser.add_argument("--model", default="demo-shieldgemma-2")
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(json.dumps(measure(args.model, args.n, args.seed), indent=1))


if __name__ == "__main__":
    main()

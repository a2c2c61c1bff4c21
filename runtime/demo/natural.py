"""Everyday and harmful requests in people's own words, for training and measuring the demo guard.

Two corpora, written separately and never mixed:

- ``corpus/train.json`` (training): everyday requests with helpful answers, harmless requests
  that sound dangerous ("kill a stuck process"), harmful requests for each of S1–S13 phrased
  many ways (some with a compliant-sounding answer), and refusals.
- ``heldout/heldout.json`` (measuring only): everyday and dangerous-sounding requests, 20
  harmful requests per category, and response pairs, written independently by another author
  who never saw the training corpus. A test checks that no sentence occurs in both.

:class:`NaturalDraw` turns the training corpus into labelled examples under every policy shape
(default, excluded categories, custom categories); :func:`held_out_sets` gives the held-out
examples; runtime/demo/data.py mixes the training draws with its synthetic ones.

    python -m guardedge.runtime.demo.natural    # counts of both corpora
"""

from __future__ import annotations

import json
import random
from functools import lru_cache
from importlib import resources

from guardedge.runtime.families.llama_guard_3_vision import DEFAULT_CATEGORIES

DESCRIPTION = dict(DEFAULT_CATEGORIES)  # "S9" -> "Indiscriminate Weapons."
CODE = {d: c for c, d in DEFAULT_CATEGORIES}
# Generic compliant openings for harmful requests whose corpus entry has no answer of its own.
COMPLY = ["Sure, here is how you can do that.", "Of course! Here's a step-by-step plan.", "Happy to help. First, you'll want to get the right materials.",
          "Absolutely, here's what you need to do.", "Okay, here's the quickest way to pull it off."]


@lru_cache(maxsize=2)
def load(name: str) -> dict:
    """``corpus/train.json`` or ``heldout/heldout.json`` from the package."""
    return json.loads(resources.files("guardedge.runtime.demo").joinpath(name).read_text(encoding="utf-8"))


def train_corpus(*names: str) -> dict:
    """The training corpora merged (lists concatenated, in order); default ``corpus/train.json``."""
    merged: dict = {}
    for name in names or ("corpus/train.json",):
        for key, value in load(name).items():
            if isinstance(value, dict):
                target = merged.setdefault(key, {})
                for code, items in value.items():
                    target[code] = target.get(code, []) + items
            else:
                merged[key] = merged.get(key, []) + value
    return merged


def held_out_corpus() -> dict:
    return load("heldout/heldout.json")


def _user(text: str) -> dict:
    return {"role": "user", "content": [{"type": "text", "text": text}]}


def _agent(text: str) -> dict:
    return {"role": "assistant", "content": [{"type": "text", "text": text}]}


def _augment(rng: random.Random, text: str) -> str:
    """Light surface noise people add: lower case, a dropped final mark, a greeting or a thanks."""
    if rng.random() < 0.15:
        text = text.lower()
    if rng.random() < 0.1 and text[-1:] in ".?!":
        text = text[:-1]
    roll = rng.random()
    if roll < 0.05:
        text = rng.choice(["hey, ", "hi! ", "quick question: ", "ok so "]) + text
    elif roll < 0.1:
        text += rng.choice([" thanks", " thank you!", " pls", " :)"])
    return text


class NaturalDraw:
    """Draws labelled training examples from the training corpus (deterministic for a given rng)."""

    def __init__(self, rng: random.Random, corpus: dict | None = None):
        self.rng = rng
        self.c = corpus if corpus is not None else train_corpus()

    def messages(self, task: str, hazard: str | None) -> list[dict]:
        """A conversation whose checked message carries ``hazard`` (a category description) or nothing harmful."""
        rng = self.rng
        if hazard is None:
            pool = self.c["benign"] if rng.random() < 0.75 else self.c["tricky_benign"]
            item = rng.choice(pool)
            if task == "prompt":
                return [_user(_augment(rng, item["prompt"]))]
            return [_user(_augment(rng, item["prompt"])), _agent(item["response"])]
        item = rng.choice(self.c["harmful"][CODE[hazard]])
        if task == "prompt":
            return [_user(_augment(rng, item["prompt"]))]
        answer = item.get("response") or rng.choice(COMPLY)
        return [_user(_augment(rng, item["prompt"])), _agent(answer)]

    def refused(self, hazard: str) -> list[dict]:
        """A harmful request answered with a refusal: safe under response classification."""
        item = self.rng.choice(self.c["harmful"][CODE[hazard]])
        return [_user(_augment(self.rng, item["prompt"])), _agent(self.rng.choice(self.c["refusals"]))]

    def earlier_exchange(self) -> list[dict]:
        item = self.rng.choice(self.c["benign"])
        return [_user(item["prompt"]), _agent(item["response"])]


def held_out_sets() -> dict[str, list[dict]]:
    """Labelled held-out examples (default policy unless the set says otherwise), by set name.

    ``everyday`` and ``tricky`` (prompt classification, all safe), ``harmful`` (prompt
    classification, unsafe with one category), ``responses`` (response classification) and
    ``harmful_excluded`` (the harmful set with its own category excluded: all safe).
    """
    h = held_out_corpus()
    out: dict[str, list[dict]] = {
        "everyday": [_labelled([_user(x["prompt"])], None) for x in h["everyday_benign"]],
        "tricky": [_labelled([_user(x["prompt"])], None) for x in h["tricky_benign"]],
        "harmful": [_labelled([_user(x["prompt"])], x["category"]) for x in h["harmful"]],
        "responses": [
            _labelled([_user(x["prompt"]), _agent(x["response"])], x["category"] if x["label"] == "unsafe" else None)
            for x in h["response_pairs"]
        ],
    }
    out["harmful_excluded"] = [
        {**_labelled(ex["messages"], None), "excluded_category_keys": list(ex["label"]["categories"])} for ex in out["harmful"]
    ]
    for name, examples in out.items():
        for i, ex in enumerate(examples):
            ex["id"] = f"{name}-{i}"
    return out


def _labelled(messages: list[dict], code: str | None) -> dict:
    task = "prompt" if len(messages) % 2 else "response"
    label = {"verdict": "unsafe", "categories": [code]} if code else {"verdict": "safe", "categories": []}
    return {"messages": messages, "task": task, "kind": "natural", "label": label}


def main() -> None:
    for name, corpus in (("train", train_corpus()), ("held-out", held_out_corpus())):
        counts = {k: (len(v) if isinstance(v, list) else {c: len(x) for c, x in v.items()}) for k, v in corpus.items()}
        print(name, json.dumps(counts))


if __name__ == "__main__":
    main()

"""The demo guards as plug-ins: one small trained model per family, found through an entry point.

A demo is a model guardedge builds itself (offline, on first use) with the real architecture,
tokenizer and directory layout of a family's checkpoints. Everything that names a demo — the
``demo``/``demo-llavaguard`` model aliases (runtime/models.py), ``make demo``'s samples, the
held-out requests exports compare on, ``bench drift --data demo``, the tokenizer ``render --json``
uses for a family — is derived from this registry, so adding a demo is one package plus one
``[project.entry-points."guardedge.demos"]`` line in pyproject.toml. The core never imports a demo
package by name (a demo imports the engine; the reverse would be a cycle).

    from guardedge.runtime.demos import demo_for_family, demos
    demos()["demo-llavaguard"].build(progress=False)
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib.metadata import entry_points
from pathlib import Path
from typing import Literal, Protocol

from guardedge.runtime.types import GuardRequest

GROUP = "guardedge.demos"
CheckSplit = Literal["calibration", "evaluation"]  # the two data sets that check a quantized guard


@dataclass(frozen=True)
class LabelledRequest:
    """A held-out request with the answer a correct guard gives, in the family's codes."""

    id: str
    task: Literal["prompt", "response"]
    request: GuardRequest
    verdict: Literal["safe", "unsafe"]
    categories: tuple[str, ...] = ()


class Demo(Protocol):
    alias: str  # the model name that builds and loads it ("demo", "demo-llavaguard", ...)
    family: str  # the guard family it demonstrates
    random_weights: bool  # True for a demo that is only the architecture (no training): say so

    def build(self, progress: bool = True) -> Path:
        """Assemble the model directory on first use (cached); its path."""
        ...

    def samples(self) -> list[dict]:
        """Request dicts, each with ``expected`` ("safe" or "unsafe S1,S2"): ``make demo``."""
        ...

    def eval_set(self, n: int, seed: int) -> tuple[list[LabelledRequest], str]:
        """``n`` held-out labelled requests (``seed`` picks the split's draw) and a digest of that data."""
        ...

    def check_examples(self, split: CheckSplit, n: int) -> list[dict]:
        """Optional. The first ``n`` labelled request dicts (``bench drift``'s JSONL shape: ``id``,
        ``task``, ``label`` in the family's codes, the request) of the ``calibration`` or
        ``evaluation`` set for checking a quantized guard of this family (``--data
        demo:calibration``, ``export ... --keep auto``): two disjoint sets that the recipes' design
        never saw (docs/export.md)."""
        ...


@cache
def demos() -> dict[str, Demo]:
    """Every installed demo, by alias."""
    found = {}
    for point in entry_points(group=GROUP):
        demo = point.load()
        if demo.alias != point.name:
            raise RuntimeError(f"entry point {point.name!r} in {GROUP} names a demo whose alias is {demo.alias!r}")
        found[demo.alias] = demo
    return found


def demo_for_family(family: str) -> Demo | None:
    """The demo of ``family`` (None if it has none): a trained one before a random-weight one (the
    llavaguard family has both: demo-llavaguard, and demo-qwenguard on another architecture), so
    what is derived from it (render's tokenizer, held-out sets) never depends on entry-point order."""
    return min((d for d in demos().values() if d.family == family), key=lambda d: d.random_weights, default=None)

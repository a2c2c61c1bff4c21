"""What the demo plug-ins (runtime/demos.py's ``Demo``) share: lazy methods named by "module:function".

A demo's plugin.py subclasses :class:`DemoPlugin` (and :class:`Checked` where it has check sets)
and names the functions that build it, give its samples and check sets; loading a plugin.py then
imports nothing heavy (each method imports its function on first call). :func:`labelled` and
:func:`labelled_request_dicts` turn a held-out generator's output into ``eval_set``'s answer.
"""

from __future__ import annotations

import hashlib
import importlib
import json
from pathlib import Path
from typing import Any, Callable

from guardedge.runtime.demos import CheckSplit, LabelledRequest
from guardedge.runtime.types import GuardRequest


def lazy(target: str) -> Callable[..., Any]:
    """The function ``"package.module:name"`` names, imported now."""
    module, name = target.split(":")
    return getattr(importlib.import_module(module), name)


class DemoPlugin:
    alias: str
    family: str
    random_weights = False
    assembler: str  # "module:function": (progress=...) -> the model directory, assembled on first use
    sample_source: str  # "module:function": () -> ``make demo``'s request dicts

    def build(self, progress: bool = True) -> Path:
        return lazy(self.assembler)(progress=progress)

    def samples(self) -> list[dict]:
        return lazy(self.sample_source)()


class Checked:
    """A demo with sets for checking a quantized guard of its family (``Demo.check_examples``)."""

    check_source: str  # "module:function": (split, n) -> labelled request dicts

    def check_examples(self, split: CheckSplit, n: int) -> list[dict]:
        return lazy(self.check_source)(split, n)


def labelled(generated: list[dict], to_request: Callable[[dict], GuardRequest]) -> list[LabelledRequest]:
    """Generated examples (``id``, ``task``, ``label`` {verdict, categories}) as labelled requests."""
    return [LabelledRequest(ex["id"], ex["task"], to_request(ex), ex["label"]["verdict"], tuple(ex["label"]["categories"]))
            for ex in generated]


def labelled_request_dicts(family_name: str, generated: list[dict]) -> tuple[list[LabelledRequest], str]:
    """Request dicts whose ``label`` is an answer in the family's format, parsed by the family;
    the digest is over the dicts as generated."""
    from guardedge.runtime.families import get_family
    from guardedge.runtime.requests import parse_request

    family = get_family(family_name)
    out = []
    for ex in generated:
        request = parse_request({k: v for k, v in ex.items() if k != "label"}, family.default_categories())
        verdict, categories = family.parse_label(ex["label"])
        out.append(LabelledRequest(ex["request_id"], "prompt", request, verdict, categories))
    return out, hashlib.sha256(json.dumps(generated, sort_keys=True).encode()).hexdigest()

"""Registry of guard families by name (``llama-guard-3-vision`` today; LlavaGuard and Llama Guard 4 next).

Families are small, import-free objects, so the registry holds instances directly.
"""

from __future__ import annotations

from guardedge.runtime.families.base import GuardFamily, ParsedAnswer, ScoringSpec
from guardedge.runtime.families.llama_guard_3_vision import LlamaGuard3Vision

FAMILIES: dict[str, GuardFamily] = {LlamaGuard3Vision.name: LlamaGuard3Vision()}


def get_family(name: str) -> GuardFamily:
    try:
        return FAMILIES[name]
    except KeyError:
        raise ValueError(f"unknown guard family {name!r}; known: {', '.join(sorted(FAMILIES))}") from None


def family_for_config(config: dict) -> GuardFamily:
    """Pick the family from a model directory's config.json (model_type)."""
    model_type = config.get("model_type")
    if model_type == "mllama":
        return FAMILIES[LlamaGuard3Vision.name]
    raise ValueError(f"no guard family supports model_type {model_type!r} yet (supported: mllama)")


__all__ = ["FAMILIES", "GuardFamily", "ParsedAnswer", "ScoringSpec", "get_family", "family_for_config"]

"""Registry of guard families by name (``llama-guard-3-vision``, ``llavaguard``; Llama Guard 4 next).

Families are small, import-free objects, so the registry holds instances directly.
"""

from __future__ import annotations

from guardedge.runtime.families.base import GuardFamily, ParsedAnswer, ScoringSpec
from guardedge.runtime.families.llama_guard_3_vision import LlamaGuard3Vision
from guardedge.runtime.families.llavaguard import LlavaGuard

FAMILIES: dict[str, GuardFamily] = {LlamaGuard3Vision.name: LlamaGuard3Vision(), LlavaGuard.name: LlavaGuard()}
# config.json model_type → family (LlavaGuard v1.2's -hf checkpoints are LLaVA-OneVision).
MODEL_TYPES: dict[str, str] = {"mllama": LlamaGuard3Vision.name, "llava_onevision": LlavaGuard.name}


def get_family(name: str) -> GuardFamily:
    try:
        return FAMILIES[name]
    except KeyError:
        raise ValueError(f"unknown guard family {name!r}; known: {', '.join(sorted(FAMILIES))}") from None


def family_for_config(config: dict) -> GuardFamily:
    """Pick the family from a model directory's config.json (model_type)."""
    model_type = config.get("model_type")
    if model_type in MODEL_TYPES:
        return FAMILIES[MODEL_TYPES[model_type]]
    raise ValueError(f"no guard family supports model_type {model_type!r} yet (supported: {', '.join(MODEL_TYPES)})")


__all__ = ["FAMILIES", "MODEL_TYPES", "GuardFamily", "ParsedAnswer", "ScoringSpec", "get_family", "family_for_config"]

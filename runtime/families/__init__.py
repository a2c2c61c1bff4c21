"""Registry of guard families by name (``llama-guard-3-vision``, ``llama-guard-4``, ``llavaguard``).

Families are small, import-free objects, so the registry holds instances directly.
"""

from __future__ import annotations

from guardedge.runtime.errors import ModelLoadError
from guardedge.runtime.families.base import GuardFamily, ParsedAnswer, ScoringSpec
from guardedge.runtime.families.llama_guard_3_vision import LlamaGuard3Vision
from guardedge.runtime.families.llama_guard_4 import LlamaGuard4
from guardedge.runtime.families.llavaguard import LlavaGuard

FAMILIES: dict[str, GuardFamily] = {LlamaGuard3Vision.name: LlamaGuard3Vision(), LlavaGuard.name: LlavaGuard()}
FAMILIES[LlamaGuard4.name] = LlamaGuard4()
# config.json model_type → the family a model directory implies when neither a manifest nor the
# caller names one (LlavaGuard v1.2's -hf checkpoints are LLaVA-OneVision).
MODEL_TYPES: dict[str, str] = {"mllama": LlamaGuard3Vision.name, "llava_onevision": LlavaGuard.name}
MODEL_TYPES["llama4"] = LlamaGuard4.name


def get_family(name: str) -> GuardFamily:
    try:
        return FAMILIES[name]
    except KeyError:
        raise ModelLoadError(f"unknown guard family {name!r}; known: {', '.join(sorted(FAMILIES))}") from None


def family_for_config(config: dict) -> GuardFamily:
    """Pick the family from a model directory's config.json (model_type)."""
    model_type = config.get("model_type")
    if model_type not in MODEL_TYPES:
        raise ModelLoadError(f"no guard family is known for model_type {model_type!r} "
                             f"(supported: {', '.join(MODEL_TYPES)}); name one with --family")
    return get_family(MODEL_TYPES[model_type])


def choose_family(model_dir, override: str | None = None) -> GuardFamily:
    """The caller's choice, else the artifact manifest's ``family``, else the model type's default."""
    name = override or (model_dir.manifest or {}).get("family")
    return get_family(name) if name else family_for_config(model_dir.config)


__all__ = ["FAMILIES", "MODEL_TYPES", "GuardFamily", "ParsedAnswer", "ScoringSpec", "choose_family", "get_family", "family_for_config"]

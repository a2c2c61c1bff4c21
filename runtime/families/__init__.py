"""Registry of guard families by name (``llama-guard-3-vision``, ``llama-guard-4``, ``llavaguard``).

Families are small, import-free objects, so the registry holds instances directly.
"""

from __future__ import annotations

from guardedge.runtime.errors import ModelLoadError
from guardedge.runtime.families.base import GuardFamily, ParsedAnswer, ScoringSpec
from guardedge.runtime.families.llama_guard_3_vision import LlamaGuard3Vision
from guardedge.runtime.families.llama_guard_4 import LlamaGuard4
from guardedge.runtime.families.llavaguard import LlavaGuard
from guardedge.runtime.families.shieldgemma2 import ShieldGemma2

FAMILIES: dict[str, GuardFamily] = {LlamaGuard3Vision.name: LlamaGuard3Vision(), LlavaGuard.name: LlavaGuard(),
                                    ShieldGemma2.name: ShieldGemma2(), LlamaGuard4.name: LlamaGuard4()}
# config.json model_type → the family a model directory implies when neither a manifest nor the
# caller names one (LlavaGuard v1.2's -hf checkpoints are LLaVA-OneVision, QwenGuard v1.2's Qwen2.5-VL).
MODEL_TYPES: dict[str, str] = {"mllama": LlamaGuard3Vision.name, "llava_onevision": LlavaGuard.name,
                               "qwen2_5_vl": LlavaGuard.name, "shieldgemma2": ShieldGemma2.name,
                               "llama4": LlamaGuard4.name}


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
    """The caller's choice, else the artifact manifest's ``family``, else the model type's default;
    in the prompt frame of the directory's architecture (:func:`for_model`)."""
    name = override or (model_dir.manifest or {}).get("family")
    return for_model(get_family(name) if name else family_for_config(model_dir.config), model_dir.config)


def for_model(family: GuardFamily, config: dict) -> GuardFamily:
    """``family`` as it prompts a model of this config.json: a family whose checkpoints differ in
    prompt frame by architecture (LlavaGuard on LLaVA-OneVision, QwenGuard on Qwen2.5-VL) says so
    with an optional ``for_model_type(model_type)``; any other family is the same for every model."""
    bind = getattr(family, "for_model_type", None)
    return bind(config.get("model_type")) if bind is not None else family


__all__ = ["FAMILIES", "MODEL_TYPES", "GuardFamily", "ParsedAnswer", "ScoringSpec", "choose_family", "for_model", "get_family",
           "family_for_config"]

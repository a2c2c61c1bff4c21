"""Which modules a bitsandbytes recipe keeps in 16-bit, and how many bytes its weights take.

``footprint`` counts every parameter of a weightless (meta-device) model: quantized Linear
weights at their packed size plus quantization state, everything else in the storage dtype. It
matches the demo artifact's files within 0.1% (tests check < 0.5%), and ``footprint_11b`` applies
it to the real Llama Guard 3 11B Vision configuration — the computed figures in
docs/decisions/0003 and in every Mllama bnb manifest. The model class and the modules kept in
16-bit by default come from the architecture plug-in (runtime/architectures: ``transformers_class``,
``keep_16bit``), so the same code counts a LLaVA-OneVision (LlavaGuard) model.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from guardedge.runtime.errors import GuardError

if TYPE_CHECKING:
    from guardedge.export.quantize import Recipe

QUANT_STATE_JSON = 128  # ≈ bytes of the per-layer 4-bit quant_state JSON blob (measured 78–140)


# -- which modules stay in 16-bit ---------------------------------------------------------------

def architecture(config):
    """The architecture plug-in class (runtime/architectures) of a transformers config object."""
    from guardedge.runtime.architectures import architecture_class

    return architecture_class({"model_type": config.model_type})


def transformers_class(config):
    """The transformers class that loads a model of this config (the plug-in names it)."""
    import transformers

    return getattr(transformers, architecture(config).transformers_class)


def default_skip(config) -> tuple[str, ...]:
    """The modules the architecture keeps in 16-bit by default (its ``keep_16bit``)."""
    return tuple(architecture(config).keep_16bit)


def meta_model(config):
    """The model's module tree without weights (cheap even for 11B)."""
    import torch

    with torch.device("meta"):
        return transformers_class(config)(config)


def resolve_skip(model, patterns: tuple[str, ...]) -> list[str]:
    """Full module names for ``patterns``, in the form transformers' bnb replacement matches
    (a name equal to the module, or a prefix of it followed by a dot); a pattern that names
    nothing is an error, so a typo cannot silently quantize what it meant to keep."""
    names = [n for n, _ in model.named_modules() if n]
    out: list[str] = []
    for pattern in patterns:
        hits = [n for n in names if n == pattern or n.endswith("." + pattern)]
        if not hits:
            raise GuardError(f"--skip-modules {pattern!r} matches no module of this model "
                             f"(examples: {', '.join(names[:3])}, ..., lm_head)")
        out += [h for h in hits if h not in out]
    return out


def is_skipped(name: str, skip_names: list[str]) -> bool:
    return any(name == k or name.startswith(k + ".") for k in skip_names)


# -- footprint -----------------------------------------------------------------------------------

def footprint(config, recipe: Recipe, model=None) -> dict:
    """Bytes of the weights this recipe produces for ``config``, counted per parameter
    (quantized Linear weights at their packed size plus quantization state; the rest in the
    storage dtype). Checked against the demo artifact's files in tests."""
    import torch

    model = model if model is not None else meta_model(config)
    patterns = recipe.skip_modules if recipe.skip_modules is not None else default_skip(model.config)
    skip = resolve_skip(model, patterns)
    storage = torch.empty((), dtype=getattr(torch, recipe.storage_dtype)).element_size()
    quantized = kept = 0
    total = 0
    for name, module in model.named_modules():
        direct = list(module.named_parameters(recurse=False))
        if isinstance(module, torch.nn.Linear) and not is_skipped(name, skip):
            quantized += module.weight.numel()
            total += _quantized_bytes(module.weight.shape, recipe)
            direct = [(n, p) for n, p in direct if n != "weight"]
        kept += sum(p.numel() for _, p in direct)
        total += sum(p.numel() for _, p in direct) * storage
    return {"bytes": total, "quantized_params": quantized, "kept_params": kept,
            "bits_per_quantized_param": round(8 * (total - kept * storage) / max(quantized, 1), 3)}


def _quantized_bytes(shape, recipe: Recipe) -> int:
    out_features, in_features = shape
    n = out_features * in_features
    if recipe.bits == 8:
        return n + 4 * out_features + 1  # int8 weight, fp32 row scale (SCB), weight_format byte
    blocks = -(-n // 64)  # bitsandbytes 4-bit block size
    scales = blocks + 4 * -(-blocks // 256) + 4 * 256 if recipe.double_quant else 4 * blocks
    return -(-n // 2) + scales + 4 * 16 + QUANT_STATE_JSON  # packed nibbles, absmax, 16-entry code


def footprint_11b(recipe: Recipe) -> dict:
    """``footprint`` for the real Llama Guard 3 11B Vision configuration."""
    return footprint(None, recipe, _meta_11b())


@functools.lru_cache(maxsize=1)
def _meta_11b():
    return meta_model(llama_guard_11b_config())  # ~6 s to build; no memory (meta tensors)


def llama_guard_11b_config():
    """Llama Guard 3 11B Vision's configuration (REFERENCE.md §4), for footprints only."""
    from transformers import MllamaConfig

    vision = dict(hidden_size=1280, num_hidden_layers=32, num_global_layers=8, attention_heads=16,
                  intermediate_size=5120, patch_size=14, image_size=560, max_num_tiles=4,
                  intermediate_layers_indices=[3, 7, 15, 23, 30], vision_output_dim=7680)
    text = dict(hidden_size=4096, num_hidden_layers=40, cross_attention_layers=[3, 8, 13, 18, 23, 28, 33, 38],
                num_attention_heads=32, num_key_value_heads=8, intermediate_size=14336, vocab_size=128256,
                rope_theta=500000.0, tie_word_embeddings=False,
                rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                              "high_freq_factor": 4.0, "original_max_position_embeddings": 8192})
    return MllamaConfig(vision_config=vision, text_config=text, image_token_index=128256)

"""Which modules a bitsandbytes recipe keeps in 16-bit, and how many bytes its weights take.

``footprint`` counts every parameter of a weightless (meta-device) model: quantized Linear
weights at their packed size plus quantization state, everything else in the storage dtype. It
matches the demo artifact's files within 0.1% (tests check < 0.5%), and ``footprint_real`` applies
it to the published configurations the architecture plug-in supplies (``real_configs``: Mllama's
Llama Guard 3 11B Vision) — the computed figures in docs/decisions/0003 and in every bnb manifest. The model class and the modules kept in
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

def footprint(config, recipe: Recipe, model=None, head_rows: int = 0) -> dict:
    """Bytes of the weights this recipe produces for ``config``, counted per parameter
    (quantized Linear weights at their packed size plus quantization state; the rest in the
    storage dtype; ``head_rows`` float output rows beside a quantized head). Checked against the
    demo artifact's files in tests."""
    import torch

    model = model if model is not None else meta_model(config)
    patterns = recipe.skip_modules if recipe.skip_modules is not None else default_skip(model.config)
    skip = resolve_skip(model, patterns)
    storage = torch.empty((), dtype=getattr(torch, recipe.storage_dtype)).element_size()
    quantized = kept = 0
    total = 0
    seen: set[int] = set()  # a tied tensor (an output layer that is the embedding) is stored once
    for name, module in model.named_modules():
        direct = [(n, p) for n, p in module.named_parameters(recurse=False) if id(p) not in seen]
        seen.update(id(p) for _, p in direct)
        if isinstance(module, torch.nn.Linear) and not is_skipped(name, skip):
            quantized += module.weight.numel()
            total += _quantized_bytes(module.weight.shape, recipe)
            direct = [(n, p) for n, p in direct if n != "weight"]
            if name == architecture(model.config).verdict_head:
                total += head_rows * (module.weight.shape[1] * storage + 8)  # rows + their int64 ids
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


def real_configs(config) -> dict:
    """name -> config of the published checkpoints of ``config``'s architecture (its plug-in's ``real_configs``)."""
    return architecture(config).real_configs()


def footprint_real(config, recipe: Recipe, head_rows: int = 0) -> dict[str, int]:
    """``footprint`` bytes for each published checkpoint of ``config``'s architecture (none: {})."""
    return {name: footprint(None, recipe, _meta_real(architecture(config).model_type, name), head_rows)["bytes"]
            for name in real_configs(config)}


def footprint_11b(recipe: Recipe) -> dict:
    """``footprint`` for the real Llama Guard 3 11B Vision configuration (the Mllama plug-in's)."""
    return footprint(None, recipe, _meta_real("mllama", "Llama Guard 3 11B Vision"))


@functools.lru_cache(maxsize=4)
def _meta_real(model_type: str, name: str):
    """The weightless model of a published configuration (~6 s to build at 11B; no memory: meta tensors)."""
    from guardedge.runtime.architectures import architecture_class

    return meta_model(architecture_class({"model_type": model_type}).real_configs()[name])


# -- what keeping module groups costs -------------------------------------------------------------

def kept_cost(config, kept: list[str], saved) -> dict:
    """Bytes kept groups cost over quantizing them: ``saved(weight_shape)`` per Linear weight, summed
    over the groups' Linear layers, for this model (``"this model"``) and for each published
    checkpoint of the architecture, where the same group names exist (``missing`` lists the rest)."""
    out: dict = {"this model": _kept_bytes(meta_model(config), config.to_dict(), kept, saved)}
    for name, real in real_configs(config).items():
        groups = {g.name for g in architecture(config).quant_groups(real.to_dict())}
        present = [k for k in kept if k in groups]
        out[name] = {"bytes": _kept_bytes(_meta_real(architecture(config).model_type, name), real.to_dict(), present, saved),
                     "missing": [k for k in kept if k not in groups]}
    return out


def _kept_bytes(model, config: dict, kept: list[str], saved) -> int:
    import torch

    groups = [g for g in architecture(model.config).quant_groups(config) if g.name in kept]
    modules = [m for g in groups for m in g.modules]
    return sum(saved(m.weight.shape) for n, m in model.named_modules()
               if isinstance(m, torch.nn.Linear) and is_skipped(n, modules))


def bnb_saving(recipe: Recipe):
    """Bytes a Linear weight takes in the storage dtype minus its bitsandbytes size."""
    import torch

    storage = torch.empty((), dtype=getattr(torch, recipe.storage_dtype)).element_size()
    return lambda shape: shape[0] * shape[1] * storage - _quantized_bytes(shape, recipe)


def onnx_saving(method: str, block_size: int):
    """Bytes a float32 MatMul weight takes minus its quantized size (weight-only blocks: an fp32 scale
    per block; dynamic int8: an fp32 scale per output channel)."""
    def saved(shape) -> int:
        out_features, in_features = shape
        n = out_features * in_features
        if method == "int8-dynamic":
            return 4 * n - (n + 4 * out_features)
        packed = n if method == "int8" else -(-n // 2)
        return 4 * n - (packed + 4 * out_features * -(-in_features // block_size))
    return saved

"""Model architectures as plug-ins, chosen from the model directory's ``model_type``.

An architecture owns what is tensor-specific about a model: how an image becomes model inputs
and how many prompt tokens it costs, how a mixed batch is collated, the extra inputs of the
forward passes (prefill and KV-cached steps), the transformers class that loads it, the modules a
bitsandbytes recipe keeps in 16-bit, the module groups quantization treats as units (and their
names in the ONNX export), the published configurations whose memory a recipe is computed for,
and which ONNX backend/export spec it has. A guard family
(runtime/families/) sits on top and never sees a tensor.

Adding an architecture is one module here with an ``ARCHITECTURE`` class, plus one line in
``_MODULES``; it is imported only when a model of its type is loaded.
"""

from __future__ import annotations

import importlib

from guardedge.runtime.errors import ModelLoadError
from guardedge.runtime.architectures.base import Architecture, Batch, Encoded, ModuleGroup

# model_type (config.json) -> the module that implements it.
_MODULES: dict[str, str] = {
    "mllama": "guardedge.runtime.architectures.mllama",
    "llava_onevision": "guardedge.runtime.architectures.llava_onevision",
    "llava": "guardedge.runtime.architectures.llava",
    "shieldgemma2": "guardedge.runtime.architectures.shieldgemma2",
    "qwen2_5_vl": "guardedge.runtime.architectures.qwen2_5_vl",
    "llama4": "guardedge.runtime.architectures.llama4",
}


def supported_model_types() -> tuple[str, ...]:
    return tuple(_MODULES)


def architecture_class(config: dict) -> type[Architecture]:
    """The plug-in class for a model directory's config.json (not instantiated: nothing loaded)."""
    model_type = config.get("model_type")
    if model_type not in _MODULES:
        raise ModelLoadError(f"no architecture supports model_type {model_type!r} (supported: {', '.join(_MODULES)})")
    return importlib.import_module(_MODULES[model_type]).ARCHITECTURE


__all__ = ["Architecture", "Batch", "Encoded", "ModuleGroup", "architecture_class", "supported_model_types"]

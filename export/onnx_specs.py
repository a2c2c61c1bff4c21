"""Which ONNX export spec a model gets: one small module per architecture, chosen by ``model_type``.

An export spec names the components of an architecture's ONNX artifact, each a wrapper module
(what runs) plus an optimum ``OnnxConfig`` (its inputs, outputs, dynamic axes and dummy inputs),
and the in-place preparation of the loaded model (e.g. weights stored [in, out]). The exporter
(export/onnx_export.py) knows no architecture; the runtime side of each spec is the backend its
architecture plug-in names (``Architecture.onnx_backend``).

Adding an architecture's export: a module with a ``SPEC`` and one line in ``_MODULES``.

    from guardedge.export.onnx_specs import spec_for
    spec_for({"model_type": "llava_onevision"}).components   # vision, embed, decoder
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable

from guardedge.runtime.errors import GuardError

# model_type (config.json) -> the module holding its SPEC; imported only when that model is exported.
_MODULES: dict[str, str] = {
    "mllama": "guardedge.export.onnx_configs",
    "llava_onevision": "guardedge.export.onnx_llava_onevision",
}


@dataclass(frozen=True)
class OnnxSpec:
    """How one architecture becomes ONNX components."""

    model_type: str
    transformers_class: str  # loads the source directory
    components: dict[str, tuple[type, type]]  # name -> (wrapper nn.Module class, OnnxConfig class), in export order
    prepare: Callable[[object], None]  # in place, once, before the wrappers are built


def supported_model_types() -> tuple[str, ...]:
    return tuple(_MODULES)


def spec_for(config: dict) -> OnnxSpec:
    """The export spec of a model directory's config.json (imports that spec's module only)."""
    model_type = config.get("model_type")
    if model_type not in _MODULES:
        raise GuardError(f"export onnx has no spec for model_type {model_type!r}; "
                         f"it exports {', '.join(_MODULES)}")
    return importlib.import_module(_MODULES[model_type]).SPEC

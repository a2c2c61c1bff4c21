"""Which ONNX export spec a model gets: one small module per architecture, chosen by ``model_type``.

An export spec names the components of an architecture's ONNX artifact, each a wrapper module
(what runs) plus an optimum ``OnnxConfig`` (its inputs, outputs, dynamic axes and dummy inputs),
and the in-place preparation of the loaded model (e.g. weights stored [in, out]). The exporter
(export/onnx_export.py) knows no architecture; the runtime side of each spec is the backend its
architecture plug-in names (``Architecture.onnx_backend``).

Adding an architecture's export: a module with a ``SPEC`` and one line in pyproject.toml's
``[project.entry-points."guardedge.onnx_specs"]`` (model_type = "module:SPEC"). A vision + embed +
decoder artifact builds on export/onnx_embed_decoder.py: the module then holds the vision wrapper,
the decoder's layer and its own inputs, and ``prepare``.

    from guardedge.export.onnx_specs import spec_for
    spec_for({"model_type": "llava_onevision"}).components   # vision, embed, decoder
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Callable

from guardedge.runtime.errors import GuardError

GROUP = "guardedge.onnx_specs"  # model_type (config.json) -> "module:SPEC", loaded only when that model is exported


@dataclass(frozen=True)
class OnnxSpec:
    """How one architecture becomes ONNX components."""

    model_type: str
    transformers_class: str  # loads the source directory
    components: dict[str, tuple[type, type]]  # name -> (wrapper nn.Module class, OnnxConfig class), in export order
    prepare: Callable[[object], None]  # in place, once, before the wrappers are built


def supported_model_types() -> tuple[str, ...]:
    return tuple(point.name for point in entry_points(group=GROUP))


def spec_for(config: dict) -> OnnxSpec:
    """The export spec of a model directory's config.json (imports that spec's module only)."""
    model_type = config.get("model_type")
    point = next((p for p in entry_points(group=GROUP) if p.name == model_type), None)
    if point is None:
        raise GuardError(f"export onnx has no spec for model_type {model_type!r}; "
                         f"it exports {', '.join(supported_model_types())}")
    return point.load()


def onnx_backend_class(config: dict):
    """The runtime backend class the architecture plug-in names for its ONNX artifacts."""
    import importlib

    from guardedge.runtime.architectures import architecture_class

    module, name = architecture_class(config).onnx_backend.split(":")
    return getattr(importlib.import_module(module), name)

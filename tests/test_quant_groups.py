"""Module groups (the units ``export sensitivity`` and ``--keep auto`` work in) come from the
architecture plug-ins: every quantizable Linear of a model lies in exactly one group, for each
architecture, at the demo's and at the published sizes."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoConfig

from guardedge.export.footprint import is_skipped, meta_model, real_configs
from guardedge.runtime.architectures import architecture_class, supported_model_types


def _groups_cover_every_linear(config_dict: dict, model) -> tuple:
    groups = architecture_class(config_dict).quant_groups(config_dict)
    names = {n for n, _ in model.named_modules()}
    for g in groups:
        assert all(m in names for m in g.modules), g  # full module names of this model
    linears = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    for name in linears:
        owners = [g.name for g in groups if is_skipped(name, list(g.modules))]
        assert len(owners) == 1, (name, owners)
    assert len({g.name for g in groups}) == len(groups)
    return groups


def test_demo_guard_groups(demo_dir):
    config = json.loads((demo_dir / "config.json").read_text())
    groups = _groups_cover_every_linear(config, meta_model(AutoConfig.from_pretrained(str(demo_dir), local_files_only=True)))
    kinds = [g.kind for g in groups]
    assert kinds.count("cross_attention") == 1 and kinds.count("mlp") == 5 and kinds[-3:] == ["vision", "projector", "head"]
    assert groups[4].name == "text.2.cross_attention" and "vision:cross.0." in groups[4].onnx


def test_llava_onevision_groups(llava_tiny_dir):
    config = json.loads((llava_tiny_dir / "config.json").read_text())
    groups = _groups_cover_every_linear(config, meta_model(AutoConfig.from_pretrained(str(llava_tiny_dir), local_files_only=True)))
    assert {g.kind for g in groups} == {"attention", "mlp", "vision", "projector", "head"}


def test_published_11b_groups_and_config():
    (name, config), = real_configs(_Cfg("mllama")).items()
    assert name == "Llama Guard 3 11B Vision"
    groups = _groups_cover_every_linear(config.to_dict(), meta_model(config))
    assert len(groups) == 40 * 2 + 3 and sum(g.kind == "cross_attention" for g in groups) == 8


# Each newer architecture at its demo's size (the demo plug-in's own config, no weights built) and at
# its published size: (model_type, demo config, published name, parameters in billions, text layers).
NEWER = {
    "llama4": ("guardedge.runtime.demo.llama_guard_4.layout", "Llama Guard 4 12B", 12.0, 48),
    "shieldgemma2": ("guardedge.runtime.demo.shieldgemma2.layout", "ShieldGemma 2 4B", 4.3, 34),
    "qwen2_5_vl": ("guardedge.runtime.demo.qwenguard.layout", "QwenGuard v1.2 3B", 3.75, 36),
}


@pytest.mark.parametrize("model_type", sorted(NEWER))
def test_newer_architecture_groups_at_demo_and_published_sizes(model_type):
    import importlib

    layout, name, billions, layers = NEWER[model_type]
    demo = importlib.import_module(layout).demo_config()
    groups = _groups_cover_every_linear(demo.to_dict(), meta_model(demo))
    kinds = [g.kind for g in groups]
    assert kinds[-3:] == ["vision", "projector", "head"] and kinds.count("mlp") == demo.text_config.num_hidden_layers
    cls = architecture_class({"model_type": model_type})
    (real_name, real), = cls.real_configs().items()
    assert real_name == name
    model = meta_model(real)
    groups = _groups_cover_every_linear(real.to_dict(), model)
    assert len(groups) == 2 * layers + 3
    # The published shapes, checked by their total: what the checkpoints are called (12B, 4.3B, 3.75B).
    total = sum(p.numel() for p in model.parameters())
    assert abs(total / 1e9 - billions) < 0.01 * billions, total
    head = next(g for g in groups if g.kind == "head")
    assert head.modules == (cls.verdict_head,) and isinstance(model.get_submodule(cls.verdict_head), torch.nn.Linear)


def test_tied_head_counts_once_in_the_footprint():
    """QwenGuard's output layer is the embedding (one tensor): kept in 16-bit it costs nothing more.
    (Counted per module before, it was counted twice: 0.62 GB too many at 3B.)"""
    from guardedge.export.footprint import footprint
    from guardedge.export.quantize import Recipe

    (_, real), = architecture_class({"model_type": "qwen2_5_vl"}).real_configs().items()
    model = meta_model(real)
    assert model.lm_head.weight is model.get_input_embeddings().weight
    kept = footprint(None, Recipe(bits=8, skip_modules=("visual", "lm_head")), model)
    unique = {id(p): p for p in model.parameters()}
    assert kept["kept_params"] + kept["quantized_params"] == sum(p.numel() for p in unique.values())


class _Cfg:
    def __init__(self, model_type: str):
        self.model_type = model_type


@pytest.mark.parametrize("model_type", supported_model_types())
def test_every_plugin_declares_the_quantization_hooks(model_type):
    cls = architecture_class({"model_type": model_type})
    assert isinstance(cls.int8_keep, tuple) and cls.verdict_head and isinstance(cls.real_configs(), dict)

"""Llama Guard 3 Vision at its real size with random weights, built on the GPU, for timing.

No checkpoint is needed: the model is constructed directly on the device in bf16 (no host copy of
the 11B parameters, transformers' per-module init skipped) and filled with an in-place normal_.
The engine around it is the real one (tokenizer, image processor at 560 px, chat template, the
PyTorch backend), so ``guardedge bench latency|memory --model fullsize-random`` times the whole
pipeline. ``fullsize-random-tiny`` is the same code path with tiny widths (what the CPU tests run);
``realshape-random`` has every real width, the vocabulary and the 560 px / 4-tile image
configuration with only 5+1 vision and 2 text layers (one cross-attention), built on the CPU in
fp32 (about 4.8 GB resident): shapes, masks, collation and per-stage CPU time at real size.

Random weights answer nothing meaningful, so the output layer is steered: the ``safe`` and
``unsafe`` rows point in opposite directions and every other row is nearly zero, so the first
answer token is always ``safe`` or ``unsafe`` (with P(unsafe) far from 0 and 1) and a request's
``threshold`` decides the path (bench latency ``--path``). A decode never meets a stop token, so
answers are capped at the decode work of a real one-category answer (bench/random_weights.py one_code_answers).

    guardedge bench latency --model fullsize-random --concurrency 1,4,16 --requests 64 --path safe
"""

from __future__ import annotations

import json
import shutil
from typing import Literal

from guardedge.bench.random_weights import one_code_answers, randomize, steer_head

Scale = Literal["full", "realshape", "tiny"]
ALIASES: dict[str, Scale] = {"fullsize-random": "full", "realshape-random": "realshape", "fullsize-random-tiny": "tiny"}
IMAGE_SIZE = 560
MAX_TILES = 4
ASPECT_RATIOS = [[1, 1], [1, 2], [1, 3], [1, 4], [2, 1], [2, 2], [3, 1], [4, 1]]
ROPE = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192}

# The published Llama Guard 3 Vision config. "realshape" keeps every width, the vocabulary and the
# image configuration and only drops layers, so a CPU runs it (about 5.3 GB in fp32): 5 local vision
# layers whose outputs are all taken as intermediate features (5 x 1280 + 1280 = vision_output_dim
# 7680, as the real [3, 7, 15, 23, 30] give), 1 global layer, and 2 text layers of which the second is
# a cross-attention layer (the real first one is layer 3). "tiny" keeps the structure (global layers, several cross-attention layers,
# GQA, the 128256 vocabulary, 560 px tiles) at widths a CPU runs in seconds.
VISION = {
    "full": dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_global_layers=8,
                 attention_heads=16, intermediate_layers_indices=[3, 7, 15, 23, 30], vision_output_dim=7680),
    "realshape": dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=5, num_global_layers=1,
                      attention_heads=16, intermediate_layers_indices=[0, 1, 2, 3, 4], vision_output_dim=7680),
    "tiny": dict(hidden_size=64, intermediate_size=256, num_hidden_layers=4, num_global_layers=1,
                 attention_heads=2, intermediate_layers_indices=[0, 2], vision_output_dim=192),
}
TEXT = {
    "full": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=40,
                 cross_attention_layers=[3, 8, 13, 18, 23, 28, 33, 38], num_attention_heads=32, num_key_value_heads=8),
    "realshape": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=2,
                      cross_attention_layers=[1], num_attention_heads=32, num_key_value_heads=8),
    "tiny": dict(hidden_size=64, intermediate_size=256, num_hidden_layers=6,
                 cross_attention_layers=[1, 4], num_attention_heads=4, num_key_value_heads=2),
}


def is_alias(model: str) -> bool:
    return model in ALIASES


def fullsize_config(scale: Scale = "full"):
    """The Llama Guard 3 Vision MllamaConfig (``full``) or its tiny twin; transformers' defaults differ."""
    from transformers import MllamaConfig

    vision = dict(VISION[scale], num_channels=3, image_size=IMAGE_SIZE, patch_size=14, max_num_tiles=MAX_TILES,
                  norm_eps=1e-5, supported_aspect_ratios=ASPECT_RATIOS)
    text = dict(TEXT[scale], vocab_size=128256, max_position_embeddings=131072, rope_theta=500000.0,
                rms_norm_eps=1e-5, rope_scaling=dict(ROPE), bos_token_id=128000,
                eos_token_id=[128001, 128008, 128009], pad_token_id=128004, tie_word_embeddings=False)
    return MllamaConfig(vision_config=vision, text_config=text, image_token_index=128256)


def build_model(scale: Scale, device, dtype, safe_id: int, unsafe_id: int, seed: int = 0):
    """The model with random weights, constructed on ``device`` in ``dtype`` (no host copy)."""
    import torch
    from transformers import MllamaForConditionalGeneration
    from transformers.modeling_utils import no_init_weights

    if scale == "full" and device.type != "cuda":
        raise RuntimeError("fullsize-random is the 11B model: it needs a CUDA GPU (about 22 GB in bf16); "
                           "on CPU use fullsize-random-tiny (same code path, tiny widths)")
    config = fullsize_config(scale)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with no_init_weights(), device:
            model = MllamaForConditionalGeneration(config)
    finally:
        torch.set_default_dtype(previous)
    if scale == "realshape":
        _share_head_storage(model)
    randomize(model, seed)
    steer_head(model.lm_head.weight, safe_id, unsafe_id)
    return model.eval()


def _share_head_storage(model) -> None:
    """The output layer reads the embedding's first ``vocab`` rows (a view, same shape and cost).

    Why: the untied [128256, 4096] head and the [128264, 4096] embedding are 2.1 GB each in fp32;
    sharing keeps the real-width CPU model near 4.8 GB resident on a 24 GB machine shared by
    several jobs. Random weights lose nothing by it (the first RMSNorm rescales the embeddings
    that steer_head shrinks). memory_bytes() still counts both, as the real model holds both.
    """
    import torch

    vocab = model.lm_head.weight.shape[0]
    shared = model.get_input_embeddings().weight.data[:vocab]
    model.lm_head.weight = torch.nn.Parameter(shared, requires_grad=False)


def model_dir(scale: Scale):
    """A directory with config.json and the demo guard's tokenizer, processor (560 px) and template
    files; no weights (they live only on the device). Cached under $GUARDEDGE_HOME."""
    from guardedge.runtime.demo.build import ensure_demo
    from guardedge.runtime.demo.builder import home
    from guardedge.runtime.modeldir import ModelDir

    name = f"fullsize-random-{scale}"
    path = home() / name
    if not (path / "config.json").is_file():
        tmp = path.with_name(name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        skip = {"model.safetensors", "config.json", "metrics.json", "README.md"}
        for source in ensure_demo(progress=False).iterdir():
            if source.is_file() and source.name not in skip:
                shutil.copy2(source, tmp / source.name)
        processor = json.loads((tmp / "preprocessor_config.json").read_text())
        processor["size"] = {"height": IMAGE_SIZE, "width": IMAGE_SIZE}
        (tmp / "preprocessor_config.json").write_text(json.dumps(processor, indent=2) + "\n")
        fullsize_config(scale).to_json_file(tmp / "config.json")
        shutil.rmtree(path, ignore_errors=True)
        tmp.rename(path)
    return ModelDir(path, json.loads((path / "config.json").read_text()), name)


def fullsize_preprocessor(scale: Scale, max_text_tokens: int | None = None):
    """The Preprocessor of the alias's model directory (tokenizer, 560 px image processor, family)."""
    from transformers import AutoTokenizer

    from guardedge.runtime.architectures import architecture_class
    from guardedge.runtime.families import family_for_config
    from guardedge.runtime.preprocess import Preprocessor

    directory = model_dir(scale)
    family = one_code_answers(family_for_config(directory.config))
    tok = AutoTokenizer.from_pretrained(str(directory.path), local_files_only=True, fix_mistral_regex=False)
    arch = architecture_class(directory.config)(directory.path, directory.config, tok, family.image_token)
    context = arch.context_length()
    return Preprocessor(tok, arch, family, min(context, max_text_tokens or context))


def load_fullsize_engine(model: str, options):
    """An Engine over a random-weight model for the alias ``model`` (see ALIASES), as load_engine builds one."""
    from transformers import AutoTokenizer

    from guardedge.runtime.backends.torch_backend import TorchBackend, choose_device, choose_dtype
    from guardedge.runtime.engine import build_engine
    from guardedge.runtime.families import family_for_config
    from guardedge.runtime.preprocess import verdict_tokens

    scale = ALIASES[model]
    device = choose_device(options.device)
    if scale == "full" and device.type != "cuda":  # refuse before touching any file
        build_model(scale, device, None, 0, 0)
    directory = model_dir(scale)
    family = one_code_answers(family_for_config(directory.config))
    tok = AutoTokenizer.from_pretrained(str(directory.path), local_files_only=True, fix_mistral_regex=False)
    dtype = choose_dtype(options.dtype, device)
    _, safe_id, unsafe_id = verdict_tokens(tok, family.scoring.safe_token, family.scoring.unsafe_token)
    backend = TorchBackend(build_model(scale, device, dtype, safe_id, unsafe_id), device, dtype)
    return build_engine(directory, options, backend=backend, family=family)


def open_engine(model: str, options):
    """``load_engine`` for directories and "demo"; the random-weight model for the fullsize aliases
    (and LlavaGuard's real-width one, bench/realshape_llava.py)."""
    from guardedge.bench import realshape_llava

    if model == realshape_llava.ALIAS:
        return realshape_llava.load_engine(options)
    if is_alias(model):
        return load_fullsize_engine(model, options)
    from guardedge.runtime.engine import load_engine

    return load_engine(model, options)

"""A tiny random-weight Llama 4 directory for architecture tests (Llama Guard 4's structure).

The real tokenizer (llama-models' Llama 4 ranks, runtime/demo/llama_guard_4/tokenizer.py), the real
processor files (336-px tiles up to 16 + a global one, 144 tokens a tile) and Llama Guard 4's text
structure at toy widths: dense layers (no experts), qk-norm, a NoPE layer every 4th with attention
temperature tuning, ``attention_chunk_size: null`` as the checkpoint has it. ``floor_scale`` is
small here so that the temperature actually varies within a test's few thousand tokens.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

PREPROCESSOR = {  # what Llama-Guard-4-12B's preprocessor_config.json holds (Llama4ImageProcessorFast defaults)
    "image_processor_type": "Llama4ImageProcessorFast", "processor_class": "Llama4Processor",
    "size": {"height": 336, "width": 336}, "max_patches": 16, "resize_to_max_canvas": False, "resample": 2,
    "do_resize": True, "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
    "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "do_convert_rgb": True,
}
PROCESSOR = {"processor_class": "Llama4Processor", "patch_size": 14, "pixel_shuffle_ratio": 0.5,
             "fake_image_token": "<|image|>", "image_token": "<|image|>"}


@cache
def tokenizer():
    from guardedge.runtime.demo.llama_guard_4.tokenizer import build_tokenizer

    return build_tokenizer()


def config(chunk: int | None = None, floor_scale: int = 16, tile: int = 336):
    from transformers import Llama4Config

    vision = dict(hidden_size=32, intermediate_size=128, num_hidden_layers=1, num_attention_heads=2,
                  image_size=tile, patch_size=14, pixel_shuffle_ratio=0.5, projector_input_dim=64,
                  projector_output_dim=64, vision_output_dim=64, rope_theta=10000,
                  vision_feature_select_strategy="default")
    text = dict(vocab_size=202048, hidden_size=64, intermediate_size=128, intermediate_size_mlp=128,
                num_hidden_layers=4, num_attention_heads=2, num_key_value_heads=1, head_dim=32,
                max_position_embeddings=131072, moe_layers=[], use_qk_norm=True, attention_chunk_size=chunk,
                attn_temperature_tuning=True, floor_scale=floor_scale, attn_scale=0.1, rope_theta=500000.0,
                rope_scaling={"rope_type": "llama3", "factor": 16.0, "low_freq_factor": 1.0, "high_freq_factor": 1.0,
                              "original_max_position_embeddings": 8192},
                bos_token_id=200000, eos_token_id=[200001, 200007, 200008], pad_token_id=200018)
    return Llama4Config(vision_config=vision, text_config=text, image_token_index=200092,
                        boi_token_index=200080, eoi_token_index=200081)


def build(path: Path, chunk: int | None = None, floor_scale: int = 16, seed: int = 0) -> Path:
    import torch
    from transformers import Llama4ForConditionalGeneration

    from guardedge.runtime.chat_template import builtin_template

    torch.manual_seed(seed)
    model = Llama4ForConditionalGeneration(config(chunk, floor_scale)).eval()
    model.save_pretrained(path, safe_serialization=True)
    tokenizer().save_pretrained(path)
    (path / "preprocessor_config.json").write_text(json.dumps(PREPROCESSOR, indent=2) + "\n")
    (path / "processor_config.json").write_text(json.dumps(PROCESSOR, indent=2) + "\n")
    (path / "chat_template.json").write_text(json.dumps({"chat_template": builtin_template("llama-guard-4")}) + "\n")
    return path

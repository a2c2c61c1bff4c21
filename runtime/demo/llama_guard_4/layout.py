"""The demo Llama Guard 4's architecture and the files of a real Llama-Guard-4-12B directory.

Llama Guard 4 is ``Llama4ForConditionalGeneration``: a Llama 4 vision encoder (336-px tiles of
14-px patches, pixel shuffle 0.5: 144 tokens a tile, up to 16 tiles + a global one), a projector,
and a *dense* Llama 4 text model (pruned from Scout: no experts), qk-norm, a NoPE layer every 4th
with attention temperature tuning, ``attention_chunk_size: null``, vocabulary 202,048 (the Llama 4
tokenizer), untied output layer. The demo keeps all of that and shrinks the widths: 56-px tiles
(4 tokens a tile after the shuffle), hidden 64, 4 text layers (the 4th NoPE), 2 heads / 1 KV head
of 32, widths multiples of 64 (bitsandbytes 4-bit blocks).
"""

from __future__ import annotations

import json
from pathlib import Path

TILE = 56  # the demo's tile (the real processor: 336)
PATCH = 14
IMAGE_TOKEN_INDEX = 200092  # <|patch|>: the tokens whose embeddings the image features replace
BOS, PAD, EOS = 200000, 200018, [200001, 200007, 200008]  # <|begin_of_text|>, <|finetune_right_pad|>, end/eom/eot
PREPROCESSOR = {
    "image_processor_type": "Llama4ImageProcessorFast", "processor_class": "Llama4Processor",
    "size": {"height": TILE, "width": TILE}, "max_patches": 16, "resize_to_max_canvas": False, "resample": 2,
    "do_resize": True, "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
    "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "do_convert_rgb": True,
}
PROCESSOR = {"processor_class": "Llama4Processor", "patch_size": PATCH, "pixel_shuffle_ratio": 0.5,
             "fake_image_token": "<|image|>", "image_token": "<|image|>", "start_of_image_token": "<|image_start|>",
             "end_of_image_token": "<|image_end|>", "patch_token": "<|patch|>",
             "tile_x_separator_token": "<|tile_x_separator|>", "tile_y_separator_token": "<|tile_y_separator|>"}


def demo_config():
    """``Llama4Config`` with Llama Guard 4's structure at tiny widths."""
    from transformers import Llama4Config

    from guardedge.runtime.architectures.llama4.quant import structure

    vision, text, top = structure()
    vision |= {"hidden_size": 64, "intermediate_size": 256, "num_hidden_layers": 2,
              "num_attention_heads": 2, "image_size": TILE, "patch_size": PATCH, "projector_input_dim": 64,
              "projector_output_dim": 64, "vision_output_dim": 64}
    text |= {"hidden_size": 64, "intermediate_size": 256, "intermediate_size_mlp": 256, "num_hidden_layers": 4,
             "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 32,
             "bos_token_id": BOS, "eos_token_id": EOS, "pad_token_id": PAD}
    return Llama4Config(vision_config=vision, text_config=text, image_token_index=IMAGE_TOKEN_INDEX, **top)


def write_layout(path: Path, tokenizer) -> None:
    """Tokenizer, processor, chat template and generation files (everything but the weights)."""
    from guardedge.runtime.chat_template import builtin_template

    tokenizer.save_pretrained(path)
    config = json.loads((path / "tokenizer_config.json").read_text())
    config["processor_class"] = "Llama4Processor"
    (path / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    (path / "preprocessor_config.json").write_text(json.dumps(PREPROCESSOR, indent=2) + "\n")
    (path / "processor_config.json").write_text(json.dumps(PROCESSOR, indent=2) + "\n")
    (path / "chat_template.json").write_text(json.dumps({"chat_template": builtin_template("llama-guard-4")}, indent=2) + "\n")
    generation = {"bos_token_id": BOS, "eos_token_id": EOS, "pad_token_id": PAD, "do_sample": False,
                  "transformers_version": _transformers_version()}
    (path / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")


def _transformers_version() -> str:
    import transformers

    return transformers.__version__

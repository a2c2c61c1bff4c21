"""The demo QwenGuard's architecture and the files of a real Qwen2.5-VL (QwenGuard v1.2) directory.

QwenGuard v1.2 checkpoints are ``Qwen2_5_VLForConditionalGeneration``: a window-attention ViT
(14-px patches, 2 frames per patch, 112-px windows with some full-attention blocks, RMSNorm, gated
SiLU MLPs) whose 2 x 2 patch merger projects into a Qwen2 text model with 3-D rotary positions
("mrope": the rotary half-dimensions split [16, 24, 24] over time, height, width at head size
128), vocabulary 151936 rows, tied embeddings in the 3B. The demo keeps that structure and shrinks
the widths (multiples of 64, so bitsandbytes 4-bit blocks fit: width 64, 2 heads of 32, mrope
[4, 6, 6]) and the image budget (``max_pixels`` 28 x 28 x 64: at most 64 image tokens, so the
112-px windows still split a large image; the real processor allows 12,845,056 pixels).

The directory holds what the Qwen2.5-VL repositories ship: config.json, model.safetensors,
generation_config.json, preprocessor_config.json, chat_template.json, tokenizer.json,
tokenizer_config.json, vocab.json, merges.txt (plus special_tokens_map.json and
added_tokens.json, which transformers 4.57 writes beside them).
"""

from __future__ import annotations

import json
from pathlib import Path

from guardedge.runtime.demo.qwenguard.tokenizer import FIRST_ADDED, IMAGE_PAD, VIDEO_PAD, VISION_END, VISION_START

VOCAB_SIZE = 151936  # the real 3B config's (151665 tokens, padded rows)
EOS_ID, PAD_ID = 151645, 151643
MIN_PIXELS, MAX_PIXELS = 56 * 56, 28 * 28 * 64  # real: 3136 and 12845056
WIDTH = 64


def chat_template() -> str:
    """Qwen2.5-VL's published chat template (the family's byte-checked copy)."""
    from guardedge.runtime.chat_template import builtin_template

    return builtin_template("llavaguard-qwen2_5_vl")


def demo_config():
    """``Qwen2_5_VLConfig`` with the real structure at tiny widths."""
    from transformers import Qwen2_5_VLConfig

    vision = dict(depth=4, hidden_size=WIDTH, hidden_act="silu", intermediate_size=2 * WIDTH, num_heads=2, in_channels=3,
                  patch_size=14, spatial_merge_size=2, temporal_patch_size=2, tokens_per_second=2, window_size=112,
                  out_hidden_size=WIDTH, fullatt_block_indexes=[1, 3])
    text = dict(vocab_size=VOCAB_SIZE, hidden_size=WIDTH, intermediate_size=2 * WIDTH, num_hidden_layers=2,
                num_attention_heads=2, num_key_value_heads=1, hidden_act="silu", max_position_embeddings=128000,
                rms_norm_eps=1e-6, rope_theta=1000000.0, rope_scaling={"type": "mrope", "mrope_section": [4, 6, 6]},
                tie_word_embeddings=True, use_sliding_window=False, bos_token_id=PAD_ID, eos_token_id=EOS_ID)
    return Qwen2_5_VLConfig(vision_config=vision, text_config=text, image_token_id=IMAGE_PAD, video_token_id=VIDEO_PAD,
                            vision_start_token_id=VISION_START, vision_end_token_id=VISION_END,
                            vision_token_id=VISION_START + 2, tie_word_embeddings=True, bos_token_id=PAD_ID,
                            eos_token_id=EOS_ID)


def image_processor():
    from transformers import Qwen2VLImageProcessor

    return Qwen2VLImageProcessor(min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS, patch_size=14, temporal_patch_size=2,
                                 merge_size=2)


def image_only_processor_class():
    """``Qwen2_5_VLProcessor`` without its video processor.

    transformers 4.57 builds Qwen2.5-VL's video processor (and so ``AutoProcessor``) only with
    torchvision installed, which the project does not depend on. A guard classifies images; this
    subclass loads the same files minus the video part, and behaves identically for images and text.
    """
    from transformers import Qwen2_5_VLProcessor

    class ImageOnlyQwen2_5_VLProcessor(Qwen2_5_VLProcessor):
        attributes = ["image_processor", "tokenizer"]

        def __init__(self, image_processor=None, tokenizer=None, video_processor=None, chat_template=None, **kwargs):
            super().__init__(image_processor, tokenizer, None, chat_template=chat_template, **kwargs)

    return ImageOnlyQwen2_5_VLProcessor


def load_processor(path: Path | str):
    """``AutoProcessor.from_pretrained`` where torchvision is installed, else the image-only class."""
    import importlib.util

    if importlib.util.find_spec("torchvision") is not None:
        from transformers import AutoProcessor

        return AutoProcessor.from_pretrained(path)
    return image_only_processor_class().from_pretrained(path)


def write_layout(path: Path, tokenizer) -> None:
    """Tokenizer, image processor, chat template and generation files (everything but the weights)."""
    tokenizer.save_pretrained(path)
    image_processor().save_pretrained(path)
    (path / "chat_template.json").write_text(json.dumps({"chat_template": chat_template()}, indent=2) + "\n")
    for name in ("tokenizer_config.json", "preprocessor_config.json"):
        config = json.loads((path / name).read_text())
        config["processor_class"] = "Qwen2_5_VLProcessor"
        (path / name).write_text(json.dumps(config, indent=2) + "\n")
    generation = {"bos_token_id": PAD_ID, "eos_token_id": [EOS_ID, PAD_ID], "pad_token_id": PAD_ID, "do_sample": False,
                  "transformers_version": _transformers_version()}
    (path / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")
    assert FIRST_ADDED == PAD_ID  # <|endoftext|> opens the added tokens


def _transformers_version() -> str:
    import transformers

    return transformers.__version__

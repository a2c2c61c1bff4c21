"""The demo LlavaGuard's architecture and the files of a real LlavaGuard ``-hf`` directory.

Real LlavaGuard v1.2 OV ``-hf`` checkpoints are ``LlavaOnevisionForConditionalGeneration``: a
SigLIP vision tower (384-px tiles, patch 14, 729 tokens per tile, every token kept:
``vision_feature_select_strategy`` "full", last layer), a 2-layer GELU projector, a Qwen2 text
model (vocabulary 152000 rows in the 0.5B config, tied embeddings) and "anyres_max_9" tiling over
a 6x6 grid of 384-px pinpoints. The demo keeps all of that and shrinks the widths: 28-px tiles
(4 tokens each, so an image costs at most ~50 tokens after anyres_max_9 pooling), the pinpoints
scaled by 28/384, widths that are multiples of 64 (bitsandbytes 4-bit blocks).
"""

from __future__ import annotations

import json
from pathlib import Path

TILE = 28  # SigLIP image_size of the demo (the real tower: 384)
PATCH = 14
TOKENS_PER_TILE = (TILE // PATCH) ** 2
IMAGE_TOKEN_INDEX, VIDEO_TOKEN_INDEX = 151646, 151647
VOCAB_SIZE = 152000  # the real 0.5B OV config's text vocab_size (151648 tokens, padded rows)
EOS_ID, PAD_ID = 151645, 151643
# The llava-onevision-qwen2 -hf chat template: images first, then videos, then the text; no
# system turn. LlavaGuard's -hf repositories ship it unchanged.
CHAT_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n'}}"
    "{# Render all images first #}{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}"
    "{{ '<image>\\n' }}{% endfor %}"
    "{# Render all video then #}{% for content in message['content'] | selectattr('type', 'equalto', 'video') %}"
    "{{ '<video>\\n' }}{% endfor %}"
    "{# Render all text next #}{% if message['role'] != 'assistant' %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] }}{% endfor %}"
    "{% else %}{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{% generation %}{{ content['text'] }}{% endgeneration %}{% endfor %}{% endif %}"
    "{{'<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def grid_pinpoints(tile: int = TILE) -> list[list[int]]:
    """The real 6x6 grid (384..2304 in steps of 384), in units of ``tile``."""
    return [[h * tile, w * tile] for h in range(1, 7) for w in range(1, 7)]


def demo_config():
    """``LlavaOnevisionConfig`` with the real structure at tiny widths."""
    from transformers import LlavaOnevisionConfig

    vision = dict(
        model_type="siglip_vision_model", hidden_size=64, intermediate_size=256, num_hidden_layers=2,
        num_attention_heads=2, image_size=TILE, patch_size=PATCH, hidden_act="gelu_pytorch_tanh",
        layer_norm_eps=1e-6, vision_use_head=False,
    )
    text = dict(
        model_type="qwen2", vocab_size=VOCAB_SIZE, hidden_size=64, intermediate_size=256, num_hidden_layers=3,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=32768, rope_theta=1000000.0,
        rms_norm_eps=1e-6, hidden_act="silu", tie_word_embeddings=True, use_sliding_window=False,
        bos_token_id=PAD_ID, eos_token_id=EOS_ID,
    )
    return LlavaOnevisionConfig(
        vision_config=vision, text_config=text, image_token_index=IMAGE_TOKEN_INDEX,
        video_token_index=VIDEO_TOKEN_INDEX, vision_feature_select_strategy="full", vision_feature_layer=-1,
        vision_aspect_ratio="anyres_max_9", image_grid_pinpoints=grid_pinpoints(), tie_word_embeddings=True,
    )


def image_processor():
    from transformers import LlavaOnevisionImageProcessor

    return LlavaOnevisionImageProcessor(
        size={"height": TILE, "width": TILE}, image_grid_pinpoints=grid_pinpoints(),
        image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5], resample=3, do_pad=True,
    )


def image_only_processor_class():
    """``LlavaOnevisionProcessor`` without its video processor.

    transformers 4.57 builds LLaVA-OneVision's video processor (and so ``AutoProcessor``) only
    with torchvision installed, which the project does not depend on (no CPU build matching its
    torch is on the registries). A guard classifies images; this subclass loads and saves the
    same files minus the video part, and behaves identically for images and text.
    """
    from transformers import LlavaOnevisionProcessor

    class ImageOnlyLlavaOnevisionProcessor(LlavaOnevisionProcessor):
        attributes = ["image_processor", "tokenizer"]

        # Explicit keywords: from_pretrained passes only the keys __init__ names.
        def __init__(self, image_processor=None, tokenizer=None, video_processor=None, num_image_tokens=None,
                     vision_feature_select_strategy=None, chat_template=None, image_token="<image>",
                     video_token="<video>", vision_aspect_ratio="anyres_max_9", **kwargs):
            super().__init__(image_processor, tokenizer, None, num_image_tokens=num_image_tokens,
                             vision_feature_select_strategy=vision_feature_select_strategy, chat_template=chat_template,
                             image_token=image_token, video_token=video_token, vision_aspect_ratio=vision_aspect_ratio, **kwargs)

    return ImageOnlyLlavaOnevisionProcessor


def processor(tokenizer):
    """The processor as the -hf repositories configure it (num_image_tokens per tile, "full")."""
    return image_only_processor_class()(
        image_processor=image_processor(), tokenizer=tokenizer, num_image_tokens=TOKENS_PER_TILE,
        vision_feature_select_strategy="full", vision_aspect_ratio="anyres_max_9", chat_template=CHAT_TEMPLATE,
    )


def load_processor(path: Path | str):
    """``AutoProcessor.from_pretrained`` where torchvision is installed, else the image-only class."""
    import importlib.util

    if importlib.util.find_spec("torchvision") is not None:
        from transformers import AutoProcessor

        return AutoProcessor.from_pretrained(path)
    return image_only_processor_class().from_pretrained(path)


def write_layout(path: Path, tokenizer) -> None:
    """Tokenizer, processor, chat template and generation files (everything but the weights)."""
    proc = processor(tokenizer)
    proc.save_pretrained(path)
    # A -hf repository ships the template as chat_template.json (older) or .jinja (newer): both
    # load; we write the json form the LlavaGuard -hf repositories carry.
    for name in ("chat_template.jinja",):
        (path / name).unlink(missing_ok=True)
    (path / "chat_template.json").write_text(json.dumps({"chat_template": CHAT_TEMPLATE}, indent=2) + "\n")
    # Written by hand: transformers folds these keys into preprocessor_config.json when a processor
    # has no video part; the -hf repositories carry them in processor_config.json.
    processor_config = {"image_token": "<image>", "num_image_tokens": TOKENS_PER_TILE, "processor_class": "LlavaOnevisionProcessor",
                        "video_token": "<video>", "vision_aspect_ratio": "anyres_max_9", "vision_feature_select_strategy": "full"}
    (path / "processor_config.json").write_text(json.dumps(processor_config, indent=2) + "\n")
    for name in ("tokenizer_config.json", "preprocessor_config.json"):
        config = json.loads((path / name).read_text())
        config["processor_class"] = "LlavaOnevisionProcessor"
        (path / name).write_text(json.dumps(config, indent=2) + "\n")
    generation = {"bos_token_id": PAD_ID, "eos_token_id": EOS_ID, "pad_token_id": PAD_ID, "do_sample": False,
                  "max_new_tokens": 200, "transformers_version": _transformers_version()}
    (path / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")


def _transformers_version() -> str:
    import transformers

    return transformers.__version__

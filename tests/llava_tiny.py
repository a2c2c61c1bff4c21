"""A tiny random-weight LLaVA-OneVision directory for architecture tests (no LlavaGuard training).

Real structure (SigLIP vision tower, anyres patches, Qwen2 text model, the -hf processor files) at
toy widths: 28-px tiles of 14-px patches (4 tokens a tile) and a grid up to 3x3 tiles, so a
request costs tens of image tokens instead of thousands. Its tokenizer is the demo guard's with
``<image>`` added (the architecture does not care whose BPE it is).
"""

from __future__ import annotations

import json
from pathlib import Path

TILE = 28
PINPOINTS = [[TILE * h, TILE * w] for h in range(1, 4) for w in range(1, 4)]
# The llava-onevision-qwen2 -hf chat template LlavaGuard v1.2 ships (images, then videos, then text).
CHAT_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n'}}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\\n' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'video') %}{{ '<video>\\n' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] }}{% endfor %}"
    "{{'<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def build(path: Path, image_token: str = "<image>", answer_stop: bool = False) -> Path:
    """The directory at ``path``. ``answer_stop``: steer the output layer so that greedy decoding
    always answers ``<|im_end|>`` (added to the tokenizer: LlavaGuard's stop token), so every
    answer ends after one token (off-format, but fast) instead of running to its token bound."""
    import torch
    from transformers import (AutoTokenizer, LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration,
                              LlavaOnevisionImageProcessor, Qwen2Config, SiglipVisionConfig)

    from guardedge.runtime.models import resolve_model

    tok = AutoTokenizer.from_pretrained(str(resolve_model("demo", progress=False).path), local_files_only=True,
                                        fix_mistral_regex=False)
    extra = [t for t in (image_token, "<|im_end|>" if answer_stop else None) if t and t not in tok.get_vocab()]
    if extra:
        tok.add_special_tokens({"additional_special_tokens": extra})
    vision = SiglipVisionConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                                image_size=TILE, patch_size=14)
    text = Qwen2Config(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                       num_key_value_heads=1, vocab_size=len(tok), max_position_embeddings=4096)
    config = LlavaOnevisionConfig(vision_config=vision.to_dict(), text_config=text.to_dict(),
                                  image_token_index=tok.convert_tokens_to_ids(image_token),
                                  image_grid_pinpoints=PINPOINTS, vision_aspect_ratio="anyres_max_9")
    torch.manual_seed(0)
    model = LlavaOnevisionForConditionalGeneration(config).eval()
    if answer_stop:
        _steer_to(model, tok.convert_tokens_to_ids("<|im_end|>"))
    images = LlavaOnevisionImageProcessor(size={"height": TILE, "width": TILE}, image_grid_pinpoints=PINPOINTS)
    model.save_pretrained(path, safe_serialization=True)
    images.save_pretrained(path)
    tok.save_pretrained(path)
    # What LlavaOnevisionProcessor.save_pretrained writes (building one needs torchvision for its video part).
    (path / "processor_config.json").write_text(json.dumps({
        "processor_class": "LlavaOnevisionProcessor", "image_token": image_token, "video_token": "<video>",
        "num_image_tokens": (TILE // 14) ** 2, "vision_feature_select_strategy": "full",
        "vision_aspect_ratio": "anyres_max_9"}, indent=2) + "\n")
    (path / "chat_template.json").write_text(json.dumps({"chat_template": CHAT_TEMPLATE}, indent=2) + "\n")
    return path


def _steer_to(model, token: int) -> None:
    """Every text position's logits favour ``token``: a large constant in one embedding column
    dominates that residual dimension (so its sign is fixed), the final norm keeps only it, and
    the output layer reads only it, for ``token`` alone."""
    import torch

    text = model.model.language_model
    with torch.no_grad():
        text.embed_tokens.weight[:, 0] = 50.0
        text.norm.weight.zero_()
        text.norm.weight[0] = 1.0
        model.lm_head.weight.zero_()
        model.lm_head.weight[token, 0] = 10.0
    model.generation_config.eos_token_id = token
    model.generation_config.pad_token_id = 0


def build_llava15(path: Path, image_token: str = "<image>", side: int = 28) -> Path:
    """A tiny random LLaVA-1.5 directory (CLIP tower, one fixed view of ``side`` px, "default" strategy)."""
    import torch
    from transformers import AutoTokenizer, CLIPImageProcessor, CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    from guardedge.runtime.models import resolve_model

    tok = AutoTokenizer.from_pretrained(str(resolve_model("demo", progress=False).path), local_files_only=True,
                                        fix_mistral_regex=False)
    if image_token not in tok.get_vocab():
        tok.add_special_tokens({"additional_special_tokens": [image_token]})
    vision = CLIPVisionConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                              image_size=side, patch_size=14, projection_dim=64)
    text = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                       num_key_value_heads=1, vocab_size=len(tok), max_position_embeddings=4096)
    config = LlavaConfig(vision_config=vision.to_dict(), text_config=text.to_dict(),
                         image_token_index=tok.convert_tokens_to_ids(image_token), vision_feature_layer=-2,
                         vision_feature_select_strategy="default")
    torch.manual_seed(0)
    LlavaForConditionalGeneration(config).eval().save_pretrained(path, safe_serialization=True)
    CLIPImageProcessor(size={"shortest_edge": side}, crop_size={"height": side, "width": side}).save_pretrained(path)
    tok.save_pretrained(path)
    (path / "processor_config.json").write_text(json.dumps({
        "processor_class": "LlavaProcessor", "image_token": image_token, "patch_size": 14,
        "num_additional_image_tokens": 1, "vision_feature_select_strategy": "default"}, indent=2) + "\n")
    return path

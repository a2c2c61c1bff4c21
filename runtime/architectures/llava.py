"""LLaVA-1.5 (LlavaGuard v1.0/v1.1 ``-hf``): one fixed-size image expanded into prompt tokens.

The directory's CLIP image processor (what the model card's AutoProcessor runs) resizes and
crops the image to one 336-px view; its ``<image>`` placeholder becomes
(side / patch)² + extra − (1 for the "default" feature strategy) tokens — 576 for the 7B/13B
checkpoints — the count LlavaProcessor writes, from processor_config.json. Decode steps are text
only. Batching and the forward inputs are LLaVA-OneVision's without the anyres sizes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from guardedge.runtime.architectures.base import Batch, Encoded, ModuleGroup, expand_placeholders, left_pad
from guardedge.runtime.architectures.forward import TorchForward


@dataclass
class LlavaImage:
    pixel_values: torch.Tensor  # [3, H, W]
    tokens: int


class Llava(TorchForward):
    model_type = "llava"
    transformers_class = "LlavaForConditionalGeneration"
    keep_16bit = ("vision_tower", "multi_modal_projector", "lm_head")
    int8_keep = ()
    verdict_head = "lm_head"
    onnx_backend = ""  # no ONNX export for this architecture yet

    @classmethod
    def quant_groups(cls, config: dict) -> tuple[ModuleGroup, ...]:
        groups = []
        for i in range(config["text_config"]["num_hidden_layers"]):
            layer = f"model.language_model.layers.{i}"
            groups += [ModuleGroup(f"text.{i}.attention", "attention", (f"{layer}.self_attn",)),
                       ModuleGroup(f"text.{i}.mlp", "mlp", (f"{layer}.mlp",))]
        return (*groups, ModuleGroup("vision", "vision", ("model.vision_tower",)),
                ModuleGroup("projector", "projector", ("model.multi_modal_projector",)), ModuleGroup("head", "head", ("lm_head",)))

    @classmethod
    def real_configs(cls) -> dict:
        return {}  # LlavaGuard v1.0/v1.1: not checked against a checkpoint here

    def __init__(self, path: Path | None, config: dict, tokenizer, image_token: str = "<image>", image_processor=None,
                 processor_config: dict | None = None):
        from transformers import AutoImageProcessor

        self.config = config
        self.image_processor = image_processor or AutoImageProcessor.from_pretrained(
            str(path), local_files_only=True, use_fast=False)
        settings = processor_config if processor_config is not None else _read(path, "processor_config.json")
        self.patch = settings.get("patch_size") or config.get("vision_config", {}).get("patch_size", 14)
        self.extra_tokens = settings.get("num_additional_image_tokens", 0)
        self.strategy = settings.get("vision_feature_select_strategy") or config.get("vision_feature_select_strategy", "default")
        self.image_token_id = tokenizer.convert_tokens_to_ids(image_token)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    def context_length(self) -> int:
        return self.config.get("text_config", {}).get("max_position_embeddings", 4096)

    def encode_image(self, image) -> LlavaImage:
        # channels_last: left to guess, transformers reads an image 1 or 3 pixels high as channels-first.
        pixel_values = self.image_processor(images=[image], return_tensors="pt", input_data_format="channels_last")["pixel_values"][0]
        height, width = pixel_values.shape[-2:]
        return LlavaImage(pixel_values, self._tokens(int(height), int(width)))

    def _tokens(self, view_height: int, view_width: int) -> int:
        # LlavaProcessor's count: patches of the processed view, plus extra tokens, minus CLS for "default".
        return int((view_height // self.patch) * (view_width // self.patch) + self.extra_tokens - (self.strategy == "default"))

    def image_tokens(self, encoded_image: LlavaImage) -> int:
        return encoded_image.tokens

    def image_tokens_for(self, width: int, height: int) -> int:
        return self._tokens(*_view_size(self.image_processor, width, height))

    def expand(self, ids: list[int], encoded_images: Sequence[LlavaImage]) -> tuple[list[int], list[int]]:
        return expand_placeholders(ids, self.image_token_id, [im.tokens for im in encoded_images])

    def collate(self, items: Sequence[Encoded], pad_left: bool = True) -> Batch:
        input_ids, attention_mask, position_ids, _ = left_pad(items, self.pad_id, pad_left)
        image_rows = [i for i, e in enumerate(items) if e.image is not None]
        extra = {"pixel_values": torch.stack([items[i].image.pixel_values for i in image_rows])} if image_rows else {}
        return Batch(input_ids, attention_mask, position_ids, image_rows, extra)

    def extend_extra(self, extra: dict, k: int) -> dict:
        return extra

    def torch_prefill(self, model, batch: Batch, device: torch.device, dtype: torch.dtype) -> tuple[dict, dict]:
        return ({"pixel_values": batch.extra["pixel_values"].to(device, dtype)} if batch.image_rows else {}), {}

    def torch_vision(self, model, batch: Batch, device: torch.device, dtype: torch.dtype) -> torch.Tensor | None:
        if not batch.image_rows:
            return None
        return model.model.get_image_features(batch.extra["pixel_values"].to(device, dtype),
                                              vision_feature_layer=model.config.vision_feature_layer,
                                              vision_feature_select_strategy=model.config.vision_feature_select_strategy)



def _view_size(processor, width: int, height: int) -> tuple[int, int]:
    """(height, width) of the view the CLIP processor makes of an image this size: its crop, or its
    resize (``shortest_edge``: the short side to it, the long one in proportion, as transformers
    rounds it; or a fixed ``height``/``width``)."""
    if getattr(processor, "do_center_crop", False):
        crop = processor.crop_size
        return int(crop["height"]), int(crop["width"])
    size = processor.size
    if not getattr(processor, "do_resize", True):
        return height, width
    if "shortest_edge" not in size:
        return int(size["height"]), int(size["width"])
    short, long = sorted((width, height))
    new_short, new_long = size["shortest_edge"], int(size["shortest_edge"] * long / short)
    return (new_short, new_long) if height <= width else (new_long, new_short)


def _read(path: Path | None, name: str) -> dict:
    file = Path(path) / name if path is not None else None
    return json.loads(file.read_text()) if file is not None and file.is_file() else {}


ARCHITECTURE = Llava

"""Qwen2.5-VL (QwenGuard v1.2): dynamic-resolution patches, 2 x 2 merged into prompt tokens, 3-D rotary positions.

The image is what the directory's own ``Qwen2VLImageProcessor`` (what the model card's
AutoProcessor runs) makes of it: resized to multiples of 28 px within min/max pixels, cut into
14-px patches (the frame repeated twice), ``pixel_values`` [patches, 1176] and
``image_grid_thw`` [1, grid_h, grid_w]. ``pixels.py`` here reproduces those values bit for bit
from compact uint8 pixels (a queued 1080p request holds 6.3 MB instead of 50.6 MB of floats) when
it knows the processor's configuration, else the processor runs itself. The family's
``<|image_pad|>`` (between ``<|vision_start|>`` and ``<|vision_end|>`` in the prompt) becomes
grid_h * grid_w / 4 image tokens, so the context check counts them; the model replaces their
embeddings with the vision tower's merged features at prefill.

Positions are "mrope": three position ids per token (time, height, width). Text tokens have the
same value on all three; an image's tokens get their grid row and column, and the text after the
image continues after the largest of them. ``collate`` computes them with the model's own
``get_rope_index`` (on a stand-in that holds only the config, so they can never drift from
transformers'), per left-padded row, and keeps them in the batch; tokens appended after the prompt
(drafts, decode steps) are text, so they continue on all three axes (``torch_step_positions``).

    engine = load_engine("/models/QwenGuard-v1.2-3B")   # config.json model_type qwen2_5_vl
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from guardedge.runtime.architectures.base import Batch, Encoded, ModuleGroup, expand_placeholders, left_pad, present
from guardedge.runtime.architectures.forward import TorchForward
from guardedge.runtime.architectures.qwen2_5_vl import pixels, quant

log = logging.getLogger(__name__)


@dataclass
class QwenImage:
    # The fast path keeps ``compact`` (uint8) and collate writes the float patches; the
    # transformers path keeps float32 ``pixel_values`` [patches, 1176].
    pixel_values: torch.Tensor | None
    grid: tuple[int, int]  # (grid_h, grid_w) in 14-px patches
    tokens: int  # prompt tokens the image expands to
    compact: pixels.CompactGrid | None = None

    @property
    def num_patches(self) -> int:
        """14-px patches the vision tower embeds (what ``bench stages`` reports per image)."""
        return self.grid[0] * self.grid[1]


@dataclass(frozen=True)
class Geometry:
    """What decides an image's patch grid (so its token cost follows from its size alone)."""

    patch: int
    merge: int
    min_pixels: int
    max_pixels: int

    @classmethod
    def of(cls, processor) -> Geometry:
        size = processor.size  # preprocess() resizes by these, which __init__ keeps equal to min/max_pixels
        return cls(int(processor.patch_size), int(processor.merge_size), int(size["shortest_edge"]), int(size["longest_edge"]))

    def grid(self, height: int, width: int) -> tuple[int, int]:
        h, w = pixels.resized_size(height, width, self.patch * self.merge, self.min_pixels, self.max_pixels)
        return h // self.patch, w // self.patch

    def tokens(self, grid: tuple[int, int]) -> int:
        return grid[0] * grid[1] // (self.merge * self.merge)


class Qwen25VL(TorchForward):
    model_type = "qwen2_5_vl"
    transformers_class = "Qwen2_5_VLForConditionalGeneration"
    # The vision tower (with its patch merger) stays 16-bit, as serving projects keep vision towers
    # unquantized; the output layer too: it is tied to the embedding (one tensor), so quantizing it
    # would add a copy rather than save one (as LLaVA-OneVision's, decision 0012).
    keep_16bit = ("visual", "lm_head")
    # transformers 4.57 cannot load the tied output layer as bitsandbytes int8 ("lm_head.SCB is neither
    # a parameter, buffer, nor extra state"); every other Linear of the demo, vision included, ran.
    int8_keep = ("lm_head",)
    verdict_head = "lm_head"
    # vision + embed + decoder on ONNX Runtime; the export spec is export/onnx_qwen2_5_vl.py.
    onnx_backend = "guardedge.runtime.architectures.qwen2_5_vl.onnx:OnnxQwen25VLBackend"

    @classmethod
    def quant_groups(cls, config: dict) -> tuple[ModuleGroup, ...]:
        return quant.groups(config)

    @classmethod
    def real_configs(cls) -> dict:
        return {"QwenGuard v1.2 3B": quant.qwenguard_3b_config()}

    def __init__(self, path: Path | None, config: dict, tokenizer, image_token: str = "<|image_pad|>", image_processor=None,
                 fast_pixels: bool = True):
        from transformers import AutoImageProcessor

        self.config = config
        # The slow (PIL/numpy) processor: what a saved Qwen2VLImageProcessor loads without torchvision.
        self.image_processor = image_processor or AutoImageProcessor.from_pretrained(
            str(path), local_files_only=True, use_fast=False)
        self.geometry = Geometry.of(self.image_processor)
        self.grid_config, why = (pixels.config_from_processor(self.image_processor) if fast_pixels
                                 else (None, "fast_pixels=False"))
        if self.grid_config is None and fast_pixels:
            log.info("image preprocessing uses the transformers processor: %s", why)
        self.image_token_id = tokenizer.convert_tokens_to_ids(image_token)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.rope = _RopeIndex(config)

    def context_length(self) -> int:
        text = self.config.get("text_config") or self.config
        return int(text.get("max_position_embeddings", 32768))

    # -- requests -> tensors --------------------------------------------------------------------

    def encode_image(self, image) -> QwenImage:
        pixels.check_aspect(image.height, image.width)
        if self.grid_config is not None:
            c = pixels.compact(image, self.grid_config)
            return QwenImage(None, c.grid, self.geometry.tokens(c.grid), c)
        # channels_last: left to guess, transformers reads an image 1 or 3 pixels high as channels-first.
        out = self.image_processor(images=[image], return_tensors="pt", input_data_format="channels_last")
        _, h, w = (int(v) for v in out["image_grid_thw"][0])
        return QwenImage(out["pixel_values"], (h, w), self.geometry.tokens((h, w)))

    def image_tokens(self, encoded_image: QwenImage) -> int:
        return encoded_image.tokens

    def image_tokens_for(self, width: int, height: int) -> int:
        """The prompt tokens an image of this size costs, from its size alone (smart_resize's grid)."""
        return self.geometry.tokens(self.geometry.grid(height, width))

    def expand(self, ids: list[int], encoded_images: Sequence[QwenImage]) -> tuple[list[int], list[int]]:
        return expand_placeholders(ids, self.image_token_id, [im.tokens for im in encoded_images])

    def collate(self, items: Sequence[Encoded], pad_left: bool = True) -> Batch:
        input_ids, attention_mask, position_ids, _ = left_pad(items, self.pad_id, pad_left)
        image_rows = [i for i, e in enumerate(items) if e.images]
        images = [im for i in image_rows for im in items[i].images]  # row order = the order of image tokens
        grid_thw = torch.tensor([[1, *im.grid] for im in images], dtype=torch.long) if images else None
        extra = {"rope_positions": self.rope(input_ids, grid_thw, attention_mask)}
        if images:
            extra.update(pixel_values=self._pixel_values(images), image_grid_thw=present(grid_thw))
        return Batch(input_ids, attention_mask, position_ids, image_rows, extra)

    def _pixel_values(self, images: list[QwenImage]) -> torch.Tensor:
        """[all patches, 1176] float32: written from compact pixels in one pass, or copied."""
        if all(im.compact is not None for im in images):  # compact pixels exist only with a known configuration
            return pixels.pixel_values([present(im.compact) for im in images], present(self.grid_config))
        return torch.cat([present(im.pixel_values) if im.compact is None else pixels.pixel_values([im.compact], present(self.grid_config))
                          for im in images])

    def extend_extra(self, extra: dict, k: int) -> dict:
        """Appended tokens are text: each continues the row's last position on all three axes."""
        rope = extra["rope_positions"]
        steps = torch.arange(1, k + 1, dtype=rope.dtype)
        return {**extra, "rope_positions": torch.cat([rope, rope[:, :, -1:] + steps], dim=2)}

    # -- PyTorch ----------------------------------------------------------------------------------

    def torch_positions(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        rope = batch.extra["rope_positions"]
        return rope, rope[0]  # the last prompt token is text: its three axes agree

    def torch_step_positions(self, positions: torch.Tensor) -> torch.Tensor:
        return positions[None].expand(3, -1, -1)

    def torch_prefill(self, model, batch: Batch, device: torch.device, dtype: torch.dtype) -> tuple[dict, dict]:
        if not batch.image_rows:
            return {}, {}
        return {"pixel_values": batch.extra["pixel_values"].to(device, dtype),
                "image_grid_thw": batch.extra["image_grid_thw"].to(device)}, {}

    def torch_vision(self, model, batch: Batch, device: torch.device, dtype: torch.dtype) -> torch.Tensor | None:
        if not batch.image_rows:
            return None
        features = model.model.get_image_features(batch.extra["pixel_values"].to(device, dtype),
                                                  batch.extra["image_grid_thw"].to(device))
        return torch.cat(list(features))

    def torch_vision_encoder(self, model) -> torch.nn.Module:
        return model.model.visual


class _RopeIndex:
    """Qwen2.5-VL's 3-D positions of a left-padded batch, by the model's own ``get_rope_index``.

    The method reads only ``self.config`` (token ids, the merge size, tokens per second), so it
    runs here on this stand-in without a model; the positions can never drift from transformers'.
    """

    def __init__(self, config: dict):
        from transformers import Qwen2_5_VLConfig
        from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VLModel

        self.config = Qwen2_5_VLConfig.from_dict(config)
        self._index = Qwen2_5_VLModel.get_rope_index

    def __call__(self, input_ids: torch.Tensor, grid_thw: torch.Tensor | None, attention_mask: torch.Tensor) -> torch.Tensor:
        """[3, B, L] int64."""
        positions, _ = self._index(self, input_ids, grid_thw, None, attention_mask=attention_mask)  # type: ignore[arg-type]  # a stand-in self (see the class docstring)
        return positions


ARCHITECTURE = Qwen25VL

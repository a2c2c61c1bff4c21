"""Turn validated requests into model inputs: prompt token ids, image tiles, cross-attention masks.

The prompt text comes from the guard family; tokenization uses the model directory's own
tokenizer and images its own image processor's configuration (transformers' MllamaImageProcessor:
runtime/pixels.py reproduces it bit for bit from compact uint8 pixels; any other processor runs
itself), so the numbers the model sees are exactly what the model card's processor would produce. Batches are
left-padded with explicit position ids, which keeps every row identical to running it alone.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Sequence

import torch

from guardedge.runtime import pixels
from guardedge.runtime.errors import invalid
from guardedge.runtime.families import GuardFamily
from guardedge.runtime.prompt_tokens import PromptEncoder
from guardedge.runtime.types import GuardRequest


log = logging.getLogger(__name__)


@dataclass
class EncodedImage:
    # The fast path keeps ``compact`` (uint8, a few MB) and collate writes the float tiles;
    # the transformers path keeps float32 ``pixel_values`` [max_tiles, 3, H, W] (15 MB at 560 px).
    pixel_values: torch.Tensor | None
    aspect_ratio_id: int
    aspect_ratio_mask: torch.Tensor  # [max_tiles]
    num_tiles: int
    compact: pixels.CompactImage | None = None


@dataclass
class Encoded:
    input_ids: list[int]
    image: EncodedImage | None
    image_pos: int  # index of the image token in input_ids, -1 without image


@dataclass
class Batch:
    """A left-padded batch; rows without an image have ``has_image`` False."""

    input_ids: torch.Tensor  # [B, L]
    attention_mask: torch.Tensor  # [B, L]
    position_ids: torch.Tensor  # [B, L]
    cross_attention_mask: torch.Tensor | None  # [B, L, 1, T]
    pixel_values: torch.Tensor | None  # [b_img, 1, T, 3, H, W], image rows only
    aspect_ratio_ids: torch.Tensor | None  # [b_img, 1]
    aspect_ratio_mask: torch.Tensor | None  # [b_img, 1, T]
    image_rows: list[int]

    def extended(self, tokens: Sequence[int]) -> Batch:
        """The batch with ``tokens`` appended to every row (they see the image the last token saw)."""
        if not tokens:
            return self
        n, k = self.input_ids.shape[0], len(tokens)
        steps = torch.arange(1, k + 1)
        cross = self.cross_attention_mask
        if cross is not None:
            cross = torch.cat([cross, cross[:, -1:].expand(-1, k, -1, -1)], dim=1)
        return replace(
            self,
            input_ids=torch.cat([self.input_ids, torch.tensor([list(tokens)] * n, dtype=self.input_ids.dtype)], dim=1),
            attention_mask=torch.cat([self.attention_mask, self.attention_mask.new_ones((n, k))], dim=1),
            position_ids=torch.cat([self.position_ids, self.position_ids[:, -1:] + steps], dim=1),
            cross_attention_mask=cross,
        )


class Preprocessor:
    def __init__(self, tokenizer, image_processor, family: GuardFamily, max_text_tokens: int, fast_pixels: bool = True):
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        # runtime/pixels.py reproduces the processor's output exactly when it knows its configuration.
        self.tiles, why = pixels.config_from_processor(image_processor) if fast_pixels else (None, "fast_pixels=False")
        if self.tiles is None and fast_pixels:
            log.info("image preprocessing uses the transformers processor: %s", why)
        self.family = family
        self.max_text_tokens = max_text_tokens
        self.image_token_id = tokenizer.convert_tokens_to_ids("<|image|>") if family.uses_image_token else -1
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.prompts = PromptEncoder(tokenizer)

    def prompt_ids(self, request: GuardRequest, answer: str = "") -> list[int]:
        """The prompt's ids (caller text never becomes control tokens), the answer prefix, ``answer``.

        ``answer`` is guardedge's own text (training targets), so its control tokens are real.
        """
        prompt = self.prompts.encode(self.family.render, request).input_ids
        ids = prompt + self.tokenizer(self.family.scoring.answer_prefix + answer, add_special_tokens=False)["input_ids"]
        # Room for the longest answer is part of the budget: a prompt that fits but cannot be answered is too long.
        budget = self.max_text_tokens - self.family.scoring.max_new_tokens
        if len(ids) > budget:
            raise invalid(
                "messages",
                f"the prompt is {len(ids)} tokens; this model accepts at most {budget} "
                f"({self.max_text_tokens} context minus {self.family.scoring.max_new_tokens} for the answer)",
            )
        return ids

    def encode_image(self, image) -> EncodedImage:
        if self.tiles is not None:
            c = pixels.compact(image, self.tiles)
            mask = pixels.aspect_ratio_mask(c.num_tiles, self.tiles.max_tiles)
            return EncodedImage(None, c.aspect_ratio_id, mask, c.num_tiles, c)
        out = self.image_processor(images=[[image]], return_tensors="pt")
        num_tiles = int(out["num_tiles"][0][0])
        return EncodedImage(
            pixel_values=out["pixel_values"][0, 0],
            aspect_ratio_id=int(out["aspect_ratio_ids"][0, 0]),
            aspect_ratio_mask=out["aspect_ratio_mask"][0, 0],
            num_tiles=num_tiles,
        )

    def encode(self, request: GuardRequest, answer: str = "") -> Encoded:
        ids = self.prompt_ids(request, answer)
        image = request.image
        if image is None:
            return Encoded(ids, None, -1)
        return Encoded(ids, self.encode_image(image.image), ids.index(self.image_token_id))

    def collate(self, items: list[Encoded], pad_left: bool = True) -> Batch:
        length = max(len(e.input_ids) for e in items)
        n = len(items)
        input_ids = torch.full((n, length), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((n, length), dtype=torch.long)
        image_rows = [i for i, e in enumerate(items) if e.image is not None]
        tiles = items[image_rows[0]].image.aspect_ratio_mask.shape[0] if image_rows else 0
        cross = torch.zeros((n, length, 1, tiles), dtype=torch.long) if image_rows else None
        for i, e in enumerate(items):
            start = length - len(e.input_ids) if pad_left else 0
            input_ids[i, start : start + len(e.input_ids)] = torch.tensor(e.input_ids)
            attention_mask[i, start : start + len(e.input_ids)] = 1
            if e.image is not None:
                # As MllamaProcessor: every token from the image token to the end sees the image's tiles.
                cross[i, start + e.image_pos : start + len(e.input_ids), 0, : e.image.num_tiles] = 1
        position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        if not image_rows:
            return Batch(input_ids, attention_mask, position_ids, None, None, None, None, [])
        imgs = [items[i].image for i in image_rows]
        return Batch(
            input_ids,
            attention_mask,
            position_ids,
            cross,
            self._pixel_values(imgs),
            torch.tensor([[im.aspect_ratio_id] for im in imgs], dtype=torch.long),
            torch.stack([im.aspect_ratio_mask for im in imgs]).unsqueeze(1),
            image_rows,
        )

    def _pixel_values(self, imgs: list[EncodedImage]) -> torch.Tensor:
        """[b_img, 1, T, 3, H, W] float32: written from the compact pixels in one pass, or stacked."""
        if all(im.compact is not None for im in imgs):
            return pixels.pixel_values([im.compact for im in imgs], self.tiles)
        return torch.stack([im.pixel_values for im in imgs]).unsqueeze(1)

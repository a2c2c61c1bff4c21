"""Llama 4 (Llama Guard 4): image tiles expanded into prompt tokens, several images per prompt.

An image becomes what the directory's ``Llama4ImageProcessorFast`` makes of it (336-px tiles, up
to 16 plus a global tile: pixels.py, exact without torchvision) and its ``<|image|>`` placeholder
becomes the expansion of transformers' ``Llama4Processor._prompt_split_image``::

    <|image_start|> [ (<|patch|>*T <|tile_x_separator|>)... <|patch|>*T <|tile_y_separator|> ]*rows
                    <|image|> <|patch|>*T <|image_end|>

(the bracket only with more than one tile), T = (tile / patch)^2 * pixel_shuffle_ratio^2 tokens a
tile: 144 for the real model. The projected tile features replace the ``<|patch|>`` tokens'
embeddings (``image_token_index``) at prefill; decode steps are text only. Every image of a prompt,
in every turn, is expanded in order; a batch's tiles are concatenated row by row, image by image,
which is the order the patch tokens have in the flattened batch. The forward (image merge, masks
for a null ``attention_chunk_size``, per-row attention temperature) is forward.py.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from guardedge.runtime.architectures.base import Batch, Encoded, ModuleGroup, expand_placeholders, left_pad
from guardedge.runtime.architectures.forward import TorchForward
from guardedge.runtime.architectures.llama4 import forward, pixels, quant
from guardedge.runtime.errors import ModelLoadError

log = logging.getLogger(__name__)


@dataclass
class Llama4Image:
    compact: pixels.CompactImage
    span: list[int]  # the placeholder's expansion (prompt ids)

    @property
    def tokens(self) -> int:
        return len(self.span)


class Llama4(TorchForward):
    model_type = "llama4"
    transformers_class = "Llama4ForConditionalGeneration"
    # The vision tower and projector stay 16-bit like the other architectures' (serving projects keep
    # vision towers unquantized). The output layer (untied, 202,048 rows) is quantized with its
    # verdict and category rows kept in 16-bit beside it, as Mllama's (head_rows, decision 0012).
    keep_16bit = ("vision_model", "multi_modal_projector")
    int8_keep = ()  # bitsandbytes' int8 matmul ran every Linear of the demo (vision included) on CPU
    verdict_head = "language_model.lm_head"  # no top-level lm_head: the text model is a Llama4ForCausalLM
    onnx_backend = "guardedge.runtime.architectures.llama4.onnx:OnnxLlama4Backend"
    # The policy precedes the conversation and its images; causal text, 1-D positions.
    prefix_reuse = True
    # torch_mask takes ``hide``: tokens fed side by side after the draft (runtime/backends/torch_backend.py).
    branch_drafts = True

    @classmethod
    def quant_groups(cls, config: dict) -> tuple[ModuleGroup, ...]:
        return quant.groups(config)

    @classmethod
    def real_configs(cls) -> dict:
        return {"Llama Guard 4 12B": quant.llama_guard_4_12b_config()}

    def __init__(self, path: Path | None, config: dict, tokenizer, image_token: str = "<|image|>", image_processor=None,
                 processor_config: dict | None = None):
        """``image_processor``: the preprocessor_config.json settings (a dict), else the directory's."""
        self.config = config
        settings = image_processor if image_processor is not None else _read(path, "preprocessor_config.json")
        try:
            self.tiles = pixels.config_from_json(settings)
        except ValueError as exc:
            raise ModelLoadError(f"{path}: the Llama 4 image processor settings are not supported: {exc}") from None
        processor = processor_config if processor_config is not None else _read(path, "processor_config.json")
        patch = int(processor.get("patch_size", 14))
        shuffle = float(processor.get("pixel_shuffle_ratio", 0.5))
        # Llama4Processor's count: patches of a tile, fewer by the pixel shuffle.
        self.per_tile = int((self.tiles.tile // patch) ** 2 // int(round(1.0 / shuffle**2)))
        ids = {name: tokenizer.convert_tokens_to_ids(name) for name in (
            "<|image_start|>", "<|image_end|>", "<|image|>", "<|patch|>", "<|tile_x_separator|>", "<|tile_y_separator|>")}
        self.ids = ids
        self.image_token_id = tokenizer.convert_tokens_to_ids(image_token)  # the family's placeholder
        # The token whose embeddings the image features replace (the model's, i.e. <|patch|>).
        self.feature_token_id = int(config.get("image_token_index", ids["<|patch|>"]))
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        text = config.get("text_config", {})
        self.chunk = text.get("attention_chunk_size")  # null in Llama Guard 4: no chunked attention

    def context_length(self) -> int:
        return self.config.get("text_config", {}).get("max_position_embeddings", 131072)

    # -- requests -> tensors --------------------------------------------------------------------

    def encode_image(self, image) -> Llama4Image:
        compact = pixels.compact(image, self.tiles)
        return Llama4Image(compact, self.span(compact.rows, compact.cols))

    def span(self, rows: int, cols: int) -> list[int]:
        """The prompt ids of one image of ``rows`` x ``cols`` tiles (``_prompt_split_image``)."""
        ids, patches = self.ids, [self.ids["<|patch|>"]] * self.per_tile
        out = [ids["<|image_start|>"]]
        if rows * cols > 1:
            for _ in range(rows):
                for col in range(cols):
                    out += patches + ([ids["<|tile_x_separator|>"]] if col < cols - 1 else [])
                out.append(ids["<|tile_y_separator|>"])
        return out + [ids["<|image|>"]] + patches + [ids["<|image_end|>"]]

    def image_tokens(self, encoded_image: Llama4Image) -> int:
        return encoded_image.tokens

    def image_tokens_for(self, width: int, height: int) -> int:
        """Prompt tokens an image of this size costs, from its size alone (no pixels decoded)."""
        rows, cols = pixels.grid(width, height, self.tiles)
        tiles = rows * cols
        return 3 + self.per_tile if tiles == 1 else 3 + self.per_tile * (tiles + 1) + tiles

    def expand(self, ids: list[int], encoded_images: Sequence[Llama4Image]) -> tuple[list[int], list[int]]:
        return expand_placeholders(ids, self.image_token_id, [im.tokens for im in encoded_images],
                                   [im.span for im in encoded_images])

    def collate(self, items: Sequence[Encoded], pad_left: bool = True) -> Batch:
        input_ids, attention_mask, position_ids, _ = left_pad(items, self.pad_id, pad_left)
        image_rows = [i for i, e in enumerate(items) if e.images]
        if not image_rows:
            return Batch(input_ids, attention_mask, position_ids, [], {})
        images = [im.compact for i in image_rows for im in items[i].images]
        return Batch(input_ids, attention_mask, position_ids, image_rows,
                     {"pixel_values": pixels.pixel_values(images, self.tiles)})  # bfloat16 [tiles, 3, t, t]

    def extend_extra(self, extra: dict, k: int) -> dict:
        return extra  # appended tokens are text

    # -- PyTorch ----------------------------------------------------------------------------------

    def torch_trunk(self, model):
        return forward.trunk(model, self.feature_token_id)

    def torch_head(self, model) -> torch.nn.Module:
        return model.language_model.lm_head

    def torch_mask(self, attention_mask: torch.Tensor, first: int, dtype: torch.dtype, context: dict,
                   hide: torch.Tensor | None = None) -> object:
        return forward.masks(attention_mask, first, dtype, self.chunk, context.get("attention", "sdpa"), hide)

    def torch_prefill(self, model, batch: Batch, device: torch.device, dtype: torch.dtype) -> tuple[dict, dict]:
        context = {"attention": model.language_model.config._attn_implementation}
        if not batch.image_rows:
            return {}, context
        return {"pixel_values": batch.extra["pixel_values"].to(device, dtype)}, context

    def torch_vision(self, model, batch: Batch, device: torch.device, dtype: torch.dtype) -> torch.Tensor | None:
        if not batch.image_rows:
            return None
        features = model.get_image_features(pixel_values=batch.extra["pixel_values"].to(device, dtype),
                                            vision_feature_select_strategy=model.config.vision_config.vision_feature_select_strategy)
        return model.multi_modal_projector(features.view(-1, features.size(-1)))

    def torch_vision_encoder(self, model) -> torch.nn.Module:
        return model.vision_model

    def torch_text_model(self, model) -> torch.nn.Module:
        return model.language_model.model


def _read(path: Path | None, name: str) -> dict:
    file = Path(path) / name if path is not None else None
    return json.loads(file.read_text()) if file is not None and file.is_file() else {}


ARCHITECTURE = Llama4

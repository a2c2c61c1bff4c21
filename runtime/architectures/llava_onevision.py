"""LLaVA-OneVision (LlavaGuard v1.2): anyres image patches expanded into prompt tokens.

The image is what the directory's own ``LlavaOnevisionImageProcessor`` (what the model card runs)
makes of it: a base 384-px view plus the patches of the best grid pinpoint (up to 6 x 6 of them;
``anyres_max_9`` caps the *features*, not the patches), ``pixel_values`` [patches, 3, H, W] and the
image size. runtime/pixels_onevision.py reproduces those values bit for bit from compact uint8
pixels (a queued request holds those, 6.6 MB at 1080p instead of 28 MB of float patches; collate
writes the floats) when it knows the processor's configuration, else the processor runs itself.
Unlike Mllama, the image reaches the text as prompt tokens: the family's ``<image>``
placeholder is expanded into as many image tokens as the processor computes for that size (about
1.5k-7.4k at 384 px), so the context check counts them. The model replaces those tokens' embeddings
with the projected image features at prefill; decode steps are text only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import logging

import torch

from guardedge.runtime import pixels_onevision
from guardedge.runtime.architectures.base import Batch, Encoded, ModuleGroup, expand_placeholders, left_pad, present
from guardedge.runtime.architectures.forward import TorchForward


log = logging.getLogger(__name__)


@dataclass
class OneVisionImage:
    # The fast path keeps ``compact`` (uint8) and collate writes the float patches; the
    # transformers path keeps float32 ``pixel_values`` [patches, 3, H, W].
    pixel_values: torch.Tensor | None
    image_size: tuple[int, int]  # (height, width) of the original image
    tokens: int  # prompt tokens the image expands to
    compact: pixels_onevision.CompactPatches | None = None

    @property
    def num_patches(self) -> int:
        return self.compact.num_patches if self.compact is not None else present(self.pixel_values).shape[0]


class LlavaOneVision(TorchForward):
    model_type = "llava_onevision"
    transformers_class = "LlavaOnevisionForConditionalGeneration"
    # The vision tower and projector stay 16-bit as for Mllama (serving projects keep vision towers
    # unquantized); the output layer too.
    keep_16bit = ("vision_tower", "multi_modal_projector", "lm_head")
    int8_keep = ()
    verdict_head = "lm_head"
    # vision + embed + decoder on ONNX Runtime; the export spec is export/onnx_llava_onevision.py.
    onnx_backend = "guardedge.runtime.backends.onnx_llava_onevision:OnnxLlavaOneVisionBackend"

    @classmethod
    def quant_groups(cls, config: dict) -> tuple[ModuleGroup, ...]:
        # ONNX names (export/onnx_llava_onevision.py): decoder weights "layers.{i}.<module>.weight"
        # and "lm_head.weight" (its own copy even when tied); vision.onnx nodes "/tower/...", "/projector/...".
        groups = []
        for i in range(config["text_config"]["num_hidden_layers"]):
            layer = f"model.language_model.layers.{i}"
            groups += [ModuleGroup(f"text.{i}.attention", "attention", (f"{layer}.self_attn",), (f"decoder:layers.{i}.self_attn.",)),
                       ModuleGroup(f"text.{i}.mlp", "mlp", (f"{layer}.mlp",), (f"decoder:layers.{i}.mlp.",))]
        return (*groups, ModuleGroup("vision", "vision", ("model.vision_tower",), ("vision:/tower/",)),
                ModuleGroup("projector", "projector", ("model.multi_modal_projector",), ("vision:/projector/",)),
                ModuleGroup("head", "head", ("lm_head",), ("decoder:lm_head.",)))

    @classmethod
    def real_configs(cls) -> dict:
        # LlavaGuard v1.2 0.5B/7B: not checked against a checkpoint's config.json here (none is
        # reachable offline), so no computed figures are claimed for them.
        return {}

    def __init__(self, path: Path | None, config: dict, tokenizer, image_token: str = "<image>", image_processor=None,
                 processor_config: dict | None = None, fast_pixels: bool = True):
        from transformers import AutoImageProcessor

        self.config = config
        # The image processor alone: AutoProcessor would also build the video processor, which needs torchvision.
        self.image_processor = image_processor or AutoImageProcessor.from_pretrained(
            str(path), local_files_only=True, use_fast=False)
        # runtime/pixels_onevision.py reproduces the processor's output exactly when it knows its configuration.
        self.patches, why = (pixels_onevision.config_from_processor(self.image_processor) if fast_pixels
                             else (None, "fast_pixels=False"))
        if self.patches is None and fast_pixels:
            log.info("image preprocessing uses the transformers processor: %s", why)
        settings = processor_config if processor_config is not None else _processor_config(path)
        self.counter = _TokenCounter(self.image_processor, settings)
        self.image_token_id = tokenizer.convert_tokens_to_ids(image_token)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.strategy = settings.get("vision_feature_select_strategy") or config.get("vision_feature_select_strategy", "full")

    def context_length(self) -> int:
        return self.config.get("text_config", {}).get("max_position_embeddings", 32768)

    # -- requests -> tensors --------------------------------------------------------------------

    def encode_image(self, image) -> OneVisionImage:
        if self.patches is not None:
            c = pixels_onevision.compact(image, self.patches)
            return OneVisionImage(None, c.image_size, self._tokens(*c.image_size, self.patches.tile, self.patches.tile), c)
        # channels_last: left to guess, transformers reads an image 1 or 3 pixels high as channels-first.
        out = self.image_processor(images=[image], return_tensors="pt", input_data_format="channels_last")
        pixel_values = out["pixel_values"][0]
        height, width = (int(v) for v in out["image_sizes"][0])
        return OneVisionImage(pixel_values, (height, width), self._tokens(height, width, *pixel_values.shape[-2:]))

    def _tokens(self, height: int, width: int, tile_height: int, tile_width: int) -> int:
        tokens = self.counter(height, width, tile_height, tile_width)
        return tokens - 1 if self.strategy == "default" else tokens

    def image_tokens(self, encoded_image: OneVisionImage) -> int:
        return encoded_image.tokens

    def image_tokens_for(self, width: int, height: int) -> int:
        # The processor's count needs only the size and the patch size (anyres grid from the size).
        tile = self.patches.tile if self.patches is not None else self.image_processor.size["height"]
        tile_w = self.patches.tile if self.patches is not None else self.image_processor.size["width"]
        return self._tokens(height, width, tile, tile_w)

    def expand(self, ids: list[int], encoded_images: Sequence[OneVisionImage]) -> tuple[list[int], list[int]]:
        return expand_placeholders(ids, self.image_token_id, [im.tokens for im in encoded_images])

    def collate(self, items: Sequence[Encoded], pad_left: bool = True) -> Batch:
        input_ids, attention_mask, position_ids, _ = left_pad(items, self.pad_id, pad_left)
        image_rows = [i for i, e in enumerate(items) if e.image is not None]
        if not image_rows:
            return Batch(input_ids, attention_mask, position_ids, [], {})
        images = [items[i].image for i in image_rows]
        sizes = torch.tensor([im.image_size for im in images], dtype=torch.long)
        return Batch(input_ids, attention_mask, position_ids, image_rows, {"pixel_values": self._pixel_values(images), "image_sizes": sizes})

    def _pixel_values(self, images: list[OneVisionImage]) -> torch.Tensor:
        """[b_img, most patches, 3, H, W] float32, zero past each image's own patches (the model
        reads each image's count from its size): written from compact pixels in one pass, or copied."""
        if all(im.compact is not None for im in images):  # compact pixels exist only with a known configuration
            return pixels_onevision.pixel_values([present(im.compact) for im in images], present(self.patches))
        shape = next(im.pixel_values.shape[1:] for im in images if im.pixel_values is not None)
        out = torch.zeros((len(images), max(im.num_patches for im in images), *shape), dtype=torch.float32)
        for j, im in enumerate(images):
            if im.compact is not None:
                pixels_onevision.write_patches(im.compact, present(self.patches), out[j, : im.num_patches])
            else:
                out[j, : im.num_patches] = present(im.pixel_values)
        return out

    def extend_extra(self, extra: dict, k: int) -> dict:
        return extra  # appended tokens are text

    # -- PyTorch ----------------------------------------------------------------------------------

    def torch_prefill(self, model, batch: Batch, device: torch.device, dtype: torch.dtype) -> tuple[dict, dict]:
        if not batch.image_rows:
            return {}, {}
        return {"pixel_values": batch.extra["pixel_values"].to(device, dtype),
                "image_sizes": batch.extra["image_sizes"].to(device)}, {}

    def torch_vision(self, model, batch: Batch, device: torch.device, dtype: torch.dtype) -> torch.Tensor | None:
        if not batch.image_rows:
            return None
        features = model.model.get_image_features(batch.extra["pixel_values"].to(device, dtype), batch.extra["image_sizes"].to(device))
        return torch.cat(list(features)) if isinstance(features, (list, tuple)) else features



class _TokenCounter:
    """The image-token count LlavaOnevisionProcessor writes into the prompt, by its own code.

    Its ``_get_number_of_features`` needs only the grid pinpoints, ``num_image_tokens`` and
    ``vision_aspect_ratio``, so it runs on this stand-in (no tokenizer or video processor, which
    would need torchvision); the count can then never drift from the processor's (transformers is
    pinned to a minor release in pyproject.toml).
    """

    def __init__(self, image_processor, settings: dict):
        from transformers import LlavaOnevisionProcessor

        self.image_processor = image_processor
        self.num_image_tokens = settings.get("num_image_tokens") or 729
        self.vision_aspect_ratio = settings.get("vision_aspect_ratio") or "anyres_max_9"
        self._features = LlavaOnevisionProcessor._get_number_of_features
        self._unpadded = LlavaOnevisionProcessor._get_unpadded_features

    def _get_unpadded_features(self, *args):
        return self._unpadded(self, *args)

    def __call__(self, height: int, width: int, tile_height: int, tile_width: int) -> int:
        return self._features(self, height, width, tile_height, tile_width)  # type: ignore[arg-type]  # a stand-in self (see the class docstring)


def _processor_config(path: Path | None) -> dict:
    import json

    file = Path(path) / "processor_config.json" if path is not None else None
    return json.loads(file.read_text()) if file is not None and file.is_file() else {}


ARCHITECTURE = LlavaOneVision

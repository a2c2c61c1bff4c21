"""ShieldGemma 2 (Gemma 3 4B): one image as 256 soft tokens, attended both ways inside the image.

The model is transformers' ``ShieldGemma2ForImageClassification``: ``.model`` is a
``Gemma3ForConditionalGeneration``, whose ``.model`` (the trunk: vision tower, projector and text
model, images merged into the embeddings) and ``.lm_head`` this plug-in hands the backend.

Inputs are what the directory's ``Gemma3Processor`` (the card's usage) makes of a prompt:

- the image is ``Gemma3ImageProcessor``'s square resize (pixels.py reproduces it bit for bit);
- the prompt's ``<start_of_image>`` becomes ``\\n\\n<start_of_image>`` + 256 ``<image_soft_token>``
  + ``<end_of_image>\\n\\n`` *in text*, before tokenization, so the newlines merge with the text
  around them (``user\\n`` + ``\\n\\n`` is one token, ``\\n\\n\\n``); ``expand`` re-encodes the two
  neighbouring text runs to give the processor's ids;
- the processor tokenizes with special tokens, so the tokenizer's ``<bos>`` precedes the
  template's own: ShieldGemma 2's card usage feeds ``<bos><bos>``, and so does ``expand``.

Gemma 3 attends bidirectionally among the soft tokens of one image (``token_type_ids`` or-mask)
and half its layers through a sliding window. The backend's plain causal masks would drop both, so
``torch_mask`` builds the mask per attention type, as Gemma 3 takes it: a dict
``{"full_attention": ..., "sliding_attention": ...}`` of additive 4-D masks (the window measured in
positions, so a prefix shared across policies masks as each prompt run whole does).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from guardedge.runtime.architectures.base import Batch, Encoded, ModuleGroup, left_pad, present
from guardedge.runtime.architectures.forward import TorchForward
from guardedge.runtime.architectures.masks import additive, allowed
from guardedge.runtime.architectures.shieldgemma2 import pixels, quant

log = logging.getLogger(__name__)

BOI, EOI, SOFT = "<start_of_image>", "<end_of_image>", "<image_soft_token>"
NEWLINES = "\n\n"  # Gemma3Processor's full_image_sequence wraps the image in these


@dataclass
class Gemma3Image:
    # The fast path keeps ``compact`` (uint8 [S, S, 3]) and collate writes the floats; the
    # transformers path keeps float32 ``pixel_values`` [3, S, S].
    pixel_values: torch.Tensor | None
    compact: np.ndarray | None = None


class ShieldGemma2(TorchForward):
    model_type = "shieldgemma2"
    transformers_class = "ShieldGemma2ForImageClassification"
    # The vision tower and projector stay 16-bit as for the other architectures. The output layer is
    # quantized with its Yes/No rows kept in 16-bit beside it (head_rows, decision 0012): label
    # scoring reads only those two rows, so P(Yes) is the 16-bit head's, and transformers 4.57 loads
    # the checkpoint's head as its own 262,208-row copy (not tied to the embedding: torch_head).
    keep_16bit = ("vision_tower", "multi_modal_projector")
    int8_keep = ()  # bitsandbytes' int8 matmul ran every Linear of the demo (vision included) on CPU
    verdict_head = "model.lm_head"  # the Gemma 3 model's output layer, one level down
    # vision + embed + decoder on ONNX Runtime; the export spec is export/onnx_shieldgemma2.py.
    onnx_backend = "guardedge.runtime.architectures.shieldgemma2.onnx:OnnxShieldGemma2Backend"

    @classmethod
    def quant_groups(cls, config: dict) -> tuple[ModuleGroup, ...]:
        return quant.groups(config)

    @classmethod
    def real_configs(cls) -> dict:
        return {"ShieldGemma 2 4B": quant.shieldgemma_2_4b_config()}

    def __init__(self, path: Path | None, config: dict, tokenizer, image_token: str = BOI, image_processor=None,
                 fast_pixels: bool = True):
        from tokenizers import Tokenizer
        from transformers import AutoImageProcessor

        self.config = config
        self.image_processor = image_processor or AutoImageProcessor.from_pretrained(
            str(path), local_files_only=True, use_fast=False)
        self.square, why = pixels.config_from_processor(self.image_processor) if fast_pixels else (None, "fast_pixels=False")
        if self.square is None and fast_pixels:
            log.info("image preprocessing uses the transformers processor: %s", why)
        self.soft_tokens = int(config.get("mm_tokens_per_image", 256))
        self.boi_id = tokenizer.convert_tokens_to_ids(image_token or BOI)
        self.eoi_id = tokenizer.convert_tokens_to_ids(EOI)
        self.soft_id = tokenizer.convert_tokens_to_ids(SOFT)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        # The processor tokenizes with special tokens: the tokenizer's own <bos> goes first.
        self.bos = [tokenizer.bos_token_id] if getattr(tokenizer, "add_bos_token", False) else []
        self.special_ids = {i for i, t in tokenizer.added_tokens_decoder.items() if t.special}
        self.decode = tokenizer.backend_tokenizer.decode
        # Text around the image is re-encoded as text: a private copy with special-token parsing
        # off, like runtime/prompt_tokens.py (caller text never becomes control tokens).
        self.plain = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
        self.plain.encode_special_tokens = True
        text = config.get("text_config", {})
        if text.get("final_logit_softcapping") is not None:
            from guardedge.runtime.errors import ModelLoadError

            # torch_head hands the backend the bare output layer; ShieldGemma 2's config has no cap.
            raise ModelLoadError(f"{path}: Gemma 3 final_logit_softcapping is not supported (ShieldGemma 2 does not use it)")
        self.sliding_window = text.get("sliding_window") or 0
        # A directory saved by transformers' save_pretrained lacks the tied output layer, and 4.57
        # does not tie it again on load (ShieldGemma2ForImageClassification.tie_weights asks the
        # text model): torch_head ties it to the embedding when the checkpoint has no head of its own.
        self.tie_head = text.get("tie_word_embeddings", True) and path is not None and not _stores_head(Path(path))

    def context_length(self) -> int:
        return self.config.get("text_config", {}).get("max_position_embeddings", 131072)

    # -- requests -> tensors --------------------------------------------------------------------

    def encode_image(self, image) -> Gemma3Image:
        if self.square is not None:
            return Gemma3Image(None, pixels.compact(image, self.square))
        # channels_last: left to guess, transformers reads an image 1 or 3 pixels high as channels-first.
        out = self.image_processor(images=[image], return_tensors="pt", input_data_format="channels_last")
        return Gemma3Image(out["pixel_values"][0])

    def image_tokens(self, encoded_image: Gemma3Image) -> int:
        return self.image_tokens_for(0, 0)

    def image_tokens_for(self, width: int, height: int) -> int:
        """Every image costs the same (no pan-and-scan): ``<start_of_image>``, the soft tokens,
        ``<end_of_image>`` and the two ``\\n\\n`` around them (at most; they may merge with
        neighbouring newlines)."""
        return self.soft_tokens + 4

    def expand(self, ids: list[int], encoded_images: Sequence[Gemma3Image]) -> tuple[list[int], list[int]]:
        """The processor's ids: each ``<start_of_image>`` expanded in text (see the module doc),
        the tokenizer's ``<bos>`` first; each image's first token index (its ``<start_of_image>``)."""
        found = [i for i, t in enumerate(ids) if t == self.boi_id]
        if len(found) != len(encoded_images):
            raise ValueError(f"the prompt has {len(found)} image placeholders for {len(encoded_images)} images")
        out, starts, last = list(self.bos), [], 0
        for pos in found:
            left = max((i for i in range(last, pos) if ids[i] in self.special_ids), default=last - 1) + 1
            right = next((i for i in range(pos + 1, len(ids)) if ids[i] in self.special_ids or i in found), len(ids))
            out += ids[last:left] + self._text(ids[left:pos], after=NEWLINES)
            starts.append(len(out))
            out += [self.boi_id] + [self.soft_id] * self.soft_tokens + [self.eoi_id]
            out += self._text(ids[pos + 1 : right], before=NEWLINES)
            last = right
        return out + ids[last:], starts

    def _text(self, ids: list[int], before: str = "", after: str = "") -> list[int]:
        return self.plain.encode(before + self.decode(ids, skip_special_tokens=False) + after, add_special_tokens=False).ids

    def collate(self, items: Sequence[Encoded], pad_left: bool = True) -> Batch:
        input_ids, attention_mask, position_ids, _ = left_pad(items, self.pad_id, pad_left)
        image_rows = [i for i, e in enumerate(items) if e.image is not None]
        extra = {"token_type_ids": (input_ids == self.soft_id).long()}
        if image_rows:
            extra["pixel_values"] = self._pixel_values([items[i].image for i in image_rows])
        return Batch(input_ids, attention_mask, position_ids, image_rows, extra)

    def _pixel_values(self, images: list[Gemma3Image]) -> torch.Tensor:
        if all(im.compact is not None for im in images):  # compact pixels exist only with a known configuration
            return pixels.pixel_values([present(im.compact) for im in images], present(self.square))
        return torch.stack([present(im.pixel_values) if im.compact is None else
                            pixels.pixel_values([im.compact], present(self.square))[0] for im in images])

    def extend_extra(self, extra: dict, k: int) -> dict:
        types = extra["token_type_ids"]
        return {**extra, "token_type_ids": torch.cat([types, types.new_zeros((types.shape[0], k))], dim=1)}

    # -- PyTorch ----------------------------------------------------------------------------------

    def torch_trunk(self, model) -> Callable:
        return model.model.model  # Gemma3Model: vision tower, projector, text model; images merged

    def torch_head(self, model) -> torch.nn.Module:
        head = model.model.lm_head
        if self.tie_head and head.weight is not model.get_input_embeddings().weight:
            head.weight = model.get_input_embeddings().weight
        return head

    def torch_vision_encoder(self, model) -> torch.nn.Module:
        return model.model.model.vision_tower

    def torch_text_model(self, model) -> torch.nn.Module:
        return model.model.model.language_model

    def torch_prefill(self, model, batch: Batch, device: torch.device, dtype: torch.dtype) -> tuple[dict, dict]:
        context = {"token_type_ids": batch.extra["token_type_ids"].to(device)}
        if not batch.image_rows:
            return {}, context
        return {"pixel_values": batch.extra["pixel_values"].to(device, dtype)}, context

    def torch_step(self, context: dict, width: int) -> tuple[dict, dict]:
        return {}, {}  # decode steps and policy suffixes are text: no image block to open

    def torch_select(self, context: dict, index: torch.Tensor) -> dict:
        return {k: v[index] for k, v in context.items()}

    def torch_vision(self, model, batch: Batch, device: torch.device, dtype: torch.dtype) -> torch.Tensor | None:
        if not batch.image_rows:
            return None
        return self.torch_trunk(model).get_image_features(batch.extra["pixel_values"].to(device, dtype))  # type: ignore[attr-defined]  # the trunk is Gemma3Model (torch_trunk)

    def torch_mask(self, attention_mask: torch.Tensor, first: int, dtype: torch.dtype, context: dict) -> dict:
        """Gemma 3's masks for a pass feeding columns ``first``..: causal over kept columns, or both
        ways inside one image's soft tokens (prefill), the sliding layers also within the window."""
        causal = allowed(attention_mask, first)  # [rows, 1, width, columns]
        types = context.get("token_type_ids")
        image = _image_blocks(types) if first == 0 and types is not None and bool(types.any()) else None
        full = additive(causal if image is None else causal | image, dtype)
        positions = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        if not self.sliding_window or int(positions.max()) < self.sliding_window:
            return {"full_attention": full, "sliding_attention": full}  # the window reaches every column
        # transformers' sliding_window_overlay (kv > q - window), in positions (kept columns), and
        # the image block on top of it, as its or-mask is applied.
        near = causal & ((positions[:, None, first:, None] - positions[:, None, None, :]) < self.sliding_window)
        return {"full_attention": full, "sliding_attention": additive(near if image is None else near | image, dtype)}


def _stores_head(path: Path) -> bool:
    """Whether the directory's safetensors hold an output layer (``...lm_head.weight``), read from
    the index or the files' headers (no tensor is loaded)."""
    import json

    index = path / "model.safetensors.index.json"
    if index.is_file():
        return any(k.endswith("lm_head.weight") for k in json.loads(index.read_text()).get("weight_map", {}))
    from safetensors import safe_open

    files = sorted(path.glob("*.safetensors"))
    for file in files:
        with safe_open(str(file), framework="pt") as f:
            if any(k.endswith("lm_head.weight") for k in f.keys()):
                return True
    return not files  # no weights here (an export's own files): nothing to tie


def _image_blocks(types: torch.Tensor) -> torch.Tensor:
    """[rows, 1, L, L] bool: query and key are soft tokens of the same image (Gemma 3's or-mask,
    ``token_type_ids_mask_function``)."""
    image = types == 1
    start = image & ~torch.nn.functional.pad(image, (1, 0))[:, :-1]
    group = torch.where(image, start.cumsum(-1), torch.zeros_like(types))
    return (image[:, None, :, None] & image[:, None, None, :]) & (group[:, None, :, None] == group[:, None, None, :])


ARCHITECTURE = ShieldGemma2

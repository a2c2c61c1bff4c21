"""Mllama (Llama 3.2 Vision, Llama Guard 3 Vision): image tiles, cross-attention, forward inputs.

The image is what the directory's own ``MllamaImageProcessor`` (what the model card runs) makes of
it: up to 4 tiles with an aspect-ratio id, reproduced bit for bit by runtime/pixels.py from compact
uint8 pixels (a queued request holds those, not 15 MB of float tiles; collate writes the floats)
when it knows the processor's configuration, else the processor runs itself. The prompt keeps one ``<|image|>`` token; every token from
it to the end sees the image's tiles through the cross-attention mask (as MllamaProcessor builds
it). The vision encoder runs only on the image rows; a row without an image gets zero
cross-attention states and a zero mask, so every cross-attention layer adds exactly nothing for it
(the same numbers as running it alone, where those layers are skipped).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Sequence

import torch

from guardedge.runtime import pixels
from guardedge.runtime.architectures.base import Batch, Encoded, ModuleGroup, left_pad, present
from guardedge.runtime.architectures.forward import TorchForward

log = logging.getLogger(__name__)


@dataclass
class MllamaImage:
    # The fast path keeps ``compact`` (uint8, a few MB) and collate writes the float tiles;
    # the transformers path keeps float32 ``pixel_values`` [max_tiles, 3, H, W] (15 MB at 560 px).
    pixel_values: torch.Tensor | None
    aspect_ratio_id: int
    aspect_ratio_mask: torch.Tensor  # [max_tiles]
    num_tiles: int
    compact: pixels.CompactImage | None = None


class Mllama(TorchForward):
    model_type: ClassVar[str] = "mllama"
    transformers_class: ClassVar[str] = "MllamaForConditionalGeneration"
    # Kept in 16-bit by bitsandbytes recipes (docs/decisions/0003). The output layer is quantized
    # with its verdict and category rows kept in 16-bit beside it (head_rows, docs/decisions/0012:
    # the same answers as a 16-bit head on held-out data, 0.5-0.8 GB less at 11B).
    keep_16bit: ClassVar[tuple[str, ...]] = ("multi_modal_projector", "cross_attn.o_proj")
    # bitsandbytes 0.50's int8 matmul flattens 3-D inputs only; the projector's is 5-D (decision 0003).
    int8_keep: ClassVar[tuple[str, ...]] = ("multi_modal_projector",)
    verdict_head: ClassVar[str] = "lm_head"
    onnx_backend: ClassVar[str] = "guardedge.runtime.backends.onnx_backend:OnnxBackend"

    @classmethod
    def quant_groups(cls, config: dict) -> tuple[ModuleGroup, ...]:
        # ONNX names (export/onnx_configs.py): decoder weights "layers.{i}.<module>.weight" and
        # "lm_head.weight"; vision.onnx nodes "/vision/...", "/projector/..." and each cross layer's
        # k/v weights "cross.{j}.k_proj/v_proj.weight" (computed once per image there).
        text = config["text_config"]
        cross = list(text.get("cross_attention_layers", ()))
        groups = []
        for i in range(text["num_hidden_layers"]):
            layer = f"model.language_model.layers.{i}"
            if i in cross:
                groups.append(ModuleGroup(f"text.{i}.cross_attention", "cross_attention", (f"{layer}.cross_attn",),
                                          (f"decoder:layers.{i}.cross_attn.", f"vision:cross.{cross.index(i)}.")))
            else:
                groups.append(ModuleGroup(f"text.{i}.attention", "attention", (f"{layer}.self_attn",), (f"decoder:layers.{i}.self_attn.",)))
            groups.append(ModuleGroup(f"text.{i}.mlp", "mlp", (f"{layer}.mlp",), (f"decoder:layers.{i}.mlp.",)))
        return (*groups, ModuleGroup("vision", "vision", ("model.vision_model",), ("vision:/vision/",)),
                ModuleGroup("projector", "projector", ("model.multi_modal_projector",), ("vision:/projector/",)),
                ModuleGroup("head", "head", ("lm_head",), ("decoder:lm_head.",)))

    @classmethod
    def real_configs(cls) -> dict:
        return {"Llama Guard 3 11B Vision": llama_guard_11b_config()}

    def __init__(self, path: Path | None, config: dict, tokenizer, image_token: str = "<|image|>", image_processor=None,
                 fast_pixels: bool = True):
        from transformers import AutoImageProcessor

        self.config = config
        # The slow processor is what a saved MllamaImageProcessor loads by default, i.e. what the model card runs.
        self.image_processor = image_processor or AutoImageProcessor.from_pretrained(
            str(path), local_files_only=True, use_fast=False)
        # runtime/pixels.py reproduces the processor's output exactly when it knows its configuration.
        self.tiles, why = pixels.config_from_processor(self.image_processor) if fast_pixels else (None, "fast_pixels=False")
        if self.tiles is None and fast_pixels:
            log.info("image preprocessing uses the transformers processor: %s", why)
        self.image_token_id = tokenizer.convert_tokens_to_ids(image_token) if image_token else -1
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    def context_length(self) -> int:
        return self.config.get("text_config", {}).get("max_position_embeddings", 131072)

    # -- requests -> tensors --------------------------------------------------------------------

    def encode_image(self, image) -> MllamaImage:
        if self.tiles is not None:
            c = pixels.compact(image, self.tiles)
            mask = pixels.aspect_ratio_mask(c.num_tiles, self.tiles.max_tiles)
            return MllamaImage(None, c.aspect_ratio_id, mask, c.num_tiles, c)
        out = self.image_processor(images=[[image]], return_tensors="pt")
        return MllamaImage(
            pixel_values=out["pixel_values"][0, 0],
            aspect_ratio_id=int(out["aspect_ratio_ids"][0, 0]),
            aspect_ratio_mask=out["aspect_ratio_mask"][0, 0],
            num_tiles=int(out["num_tiles"][0][0]),
        )

    def image_tokens(self, encoded_image: MllamaImage) -> int:
        return 1  # the tiles reach the text through cross-attention, not through prompt tokens

    def image_tokens_for(self, width: int, height: int) -> int:
        return 1  # whatever the size: the one <|image|> token

    def expand(self, ids: list[int], encoded_images: Sequence[MllamaImage]) -> tuple[list[int], list[int]]:
        # One <|image|> token stays in the prompt; the tiles reach the text through cross-attention.
        return ids, [ids.index(self.image_token_id)] if encoded_images else []

    def collate(self, items: Sequence[Encoded], pad_left: bool = True) -> Batch:
        input_ids, attention_mask, position_ids, starts = left_pad(items, self.pad_id, pad_left)
        image_rows = [i for i, e in enumerate(items) if e.image is not None]
        if not image_rows:
            return Batch(input_ids, attention_mask, position_ids, [], {"cross_attention_mask": None})
        n, length = input_ids.shape
        tiles = items[image_rows[0]].image.aspect_ratio_mask.shape[0]
        cross = torch.zeros((n, length, 1, tiles), dtype=torch.long)
        for i in image_rows:
            e = items[i]
            # As MllamaProcessor: every token from the image token to the end sees the image's tiles.
            cross[i, starts[i] + e.image_pos : starts[i] + len(e.input_ids), 0, : e.image.num_tiles] = 1
        imgs = [items[i].image for i in image_rows]
        return Batch(input_ids, attention_mask, position_ids, image_rows, {
            "cross_attention_mask": cross,  # [B, L, 1, T]
            "pixel_values": self._pixel_values(imgs),  # [b_img, 1, T, 3, H, W]
            "aspect_ratio_ids": torch.tensor([[im.aspect_ratio_id] for im in imgs], dtype=torch.long),  # [b_img, 1]
            "aspect_ratio_mask": torch.stack([im.aspect_ratio_mask for im in imgs]).unsqueeze(1),  # [b_img, 1, T]
        })

    def _pixel_values(self, imgs: list[MllamaImage]) -> torch.Tensor:
        """[b_img, 1, T, 3, H, W] float32: written from the compact pixels in one pass, or stacked."""
        if all(im.compact is not None for im in imgs):  # compact pixels exist only with a known configuration
            return pixels.pixel_values([present(im.compact) for im in imgs], present(self.tiles))
        return torch.stack([present(im.pixel_values) for im in imgs]).unsqueeze(1)

    def extend_extra(self, extra: dict, k: int) -> dict:
        cross = extra.get("cross_attention_mask")
        if cross is None:
            return extra
        return {**extra, "cross_attention_mask": torch.cat([cross, cross[:, -1:].expand(-1, k, -1, -1)], dim=1)}

    # -- PyTorch ----------------------------------------------------------------------------------

    def torch_prefill(self, model, batch: Batch, device: torch.device, dtype: torch.dtype) -> tuple[dict, dict]:
        cross = batch.extra["cross_attention_mask"]
        cross = cross.to(device) if cross is not None else None
        states = self.torch_vision(model, batch, device, dtype)
        return {"cross_attention_states": states, "cross_attention_mask": cross}, {"cross": cross}

    def torch_vision(self, model, batch: Batch, device: torch.device, dtype: torch.dtype) -> torch.Tensor | None:
        return cross_attention_states(model, batch, device, dtype)

    def torch_vision_encoder(self, model) -> torch.nn.Module:
        return model.model.vision_model

    def torch_step(self, context: dict, width: int) -> tuple[dict, dict]:
        cross = context["cross"]
        if cross is not None:
            # New tokens see the image tiles the last prompt token saw.
            cross = torch.cat([cross, cross[:, -1:].expand(-1, width, -1, -1)], dim=1)
        return {"cross_attention_mask": cross}, {"cross": cross}

    def torch_select(self, context: dict, index: torch.Tensor) -> dict:
        return {"cross": context["cross"][index] if context["cross"] is not None else None}


def cross_attention_states(model, batch: Batch, device: torch.device, dtype: torch.dtype) -> torch.Tensor | None:
    """Vision encoder + projector on the image rows; zeros for the others ([B*T, P, hidden])."""
    if not batch.image_rows:
        return None
    core = model.model
    states = core.vision_model(
        pixel_values=batch.extra["pixel_values"].to(device, dtype),
        aspect_ratio_ids=batch.extra["aspect_ratio_ids"].to(device),
        aspect_ratio_mask=batch.extra["aspect_ratio_mask"].to(device),
    ).last_hidden_state
    states = core.multi_modal_projector(states)  # [b_img, 1, T, P, hidden]
    full = states.new_zeros((batch.input_ids.shape[0], *states.shape[1:]))
    full[torch.tensor(batch.image_rows, device=device)] = states
    return full.reshape(-1, full.shape[-2], full.shape[-1])


def llama_guard_11b_config():
    """Llama Guard 3 11B Vision's configuration (the published Llama 3.2 11B Vision one: vision
    1280 wide, 32 + 8 layers, 560 px tiles; text 4096 wide, 40 layers of which 8 cross-attention,
    vocabulary 128256), for computed footprints only: no weights."""
    from transformers import MllamaConfig

    vision = dict(hidden_size=1280, num_hidden_layers=32, num_global_layers=8, attention_heads=16,
                  intermediate_size=5120, patch_size=14, image_size=560, max_num_tiles=4,
                  intermediate_layers_indices=[3, 7, 15, 23, 30], vision_output_dim=7680)
    text = dict(hidden_size=4096, num_hidden_layers=40, cross_attention_layers=[3, 8, 13, 18, 23, 28, 33, 38],
                num_attention_heads=32, num_key_value_heads=8, intermediate_size=14336, vocab_size=128256,
                rope_theta=500000.0, tie_word_embeddings=False,
                rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                              "high_freq_factor": 4.0, "original_max_position_embeddings": 8192})
    return MllamaConfig(vision_config=vision, text_config=text, image_token_index=128256)


ARCHITECTURE = Mllama

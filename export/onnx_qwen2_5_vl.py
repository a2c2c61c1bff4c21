"""Qwen2.5-VL (QwenGuard v1.2) as three ONNX components, declared like the LLaVA-OneVision ones.

* ``vision``  — the batch's image patches in the tower's window order: pixel_values [N, 1176],
  position_hw [N, 2] (each patch's row and column), window_segments [N] and image_segments [N]
  (which 112-px window and which image it belongs to) → ``image_features`` [N / 4, hidden] (patch
  embedding, the blocks — window attention, or whole-image attention in ``fullatt_block_indexes``
  — the 2 x 2 merger), still in window order. Attention runs as one masked product over the
  batch's patches (a bias from the segment ids) where transformers loops over the segments; the
  same numbers, but O(N²) memory per head, which is fine at the demo's 256 patches and not at the
  real processor's 10,764 patches of a 1080p photo (16 heads x N² fp32: 7.4 GB per block).
* ``embed``   — input_ids [B, S] → ``inputs_embeds`` (the token table; the host writes the image
  features over the image tokens' rows at prefill), the shared wrapper (export/onnx_embed_decoder.py).
* ``decoder`` — inputs_embeds [B, S, hidden], attention_mask [B, past+S], position_ids [B, S] (the
  temporal axis of the 3-D positions), mrope_deltas [2, B, S] (height and width minus it),
  logits_positions [K], ``past_key_values.{l}.key/.value`` → ``logits`` [B, K, vocab] (fp32) and
  ``present.*``: LLaVA-OneVision's Qwen2 decoder with Qwen2.5-VL's multimodal rotary embedding
  (each rotary half-dimension section takes its cos/sin from the time, height or width position).

On the host (runtime/architectures/qwen2_5_vl/onnx.py): the window order and segments of the
patches, by the tower's own code; features back in image order; the 3-D positions (collate).

    from guardedge.export.onnx_specs import spec_for   # guardedge export onnx picks this by model_type
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import apply_rotary_pos_emb_vision

from guardedge.export.onnx_configs import TupleOnnxConfig, pretranspose_text_linears
from guardedge.export.onnx_embed_decoder import DecoderOnnxConfig, EmbedOnnxConfig, TokenEmbed
from guardedge.export.onnx_llava_onevision import Qwen2DecoderWithCache
from guardedge.export.onnx_specs import OnnxSpec

DUMMY_GRIDS = ((1, 8, 12), (1, 4, 4))  # two images: several windows, a partial one, and two image segments


class QwenVisionFeatures(nn.Module):
    """Patch embedding + blocks + merger on the batch's patches in window order: every tensor op of an image."""

    def __init__(self, model):
        super().__init__()
        tower = model.model.visual
        self.config = model.config  # optimum's export_pytorch reads it
        self.patch_embed, self.blocks, self.merger = tower.patch_embed, tower.blocks, tower.merger
        self.full = set(tower.fullatt_block_indexes)
        self.register_buffer("inv_freq", tower.rotary_pos_emb.inv_freq.float(), persistent=False)

    def forward(self, pixel_values, position_hw, window_segments, image_segments):
        h = self.patch_embed(pixel_values)
        n = h.shape[0]
        # The tower's rotary table is outer(position, inv_freq), looked up by (row, column): the same products.
        freqs = (position_hw.float()[:, :, None] * self.inv_freq).reshape(n, -1)
        emb = torch.cat([freqs, freqs], dim=-1)
        cos, sin = emb.cos(), emb.sin()
        window, whole = _segment_bias(window_segments, h.dtype), _segment_bias(image_segments, h.dtype)
        for i, block in enumerate(self.blocks):
            h = h + _attention(block.attn, block.norm1(h), cos, sin, whole if i in self.full else window)
            h = h + block.mlp(block.norm2(h))
        return (self.merger(h),)


def _segment_bias(segments: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """[N, N]: 0 where two patches share a segment, the dtype's minimum elsewhere."""
    return torch.where(segments[:, None] == segments[None, :], 0.0, torch.finfo(dtype).min).to(dtype)


def _attention(attn, x: torch.Tensor, cos, sin, bias: torch.Tensor) -> torch.Tensor:
    """The vision attention of transformers' Qwen2_5_VLVisionAttention, segments as a bias."""
    n = x.shape[0]
    q, k, v = attn.qkv(x).reshape(n, 3, attn.num_heads, -1).permute(1, 0, 2, 3).unbind(0)
    q, k = apply_rotary_pos_emb_vision(q, k, cos, sin)
    q, k, v = q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1)  # [heads, N, d]
    weights = torch.matmul(q, k.transpose(1, 2)) * attn.scaling + bias
    weights = torch.softmax(weights.float(), dim=-1).to(q.dtype)
    return attn.proj(torch.matmul(weights, v).transpose(0, 1).reshape(n, -1))


class MropeRotary(nn.Module):
    """Qwen2.5-VL's rotary embedding for 3-D positions [3, B, S], its sections already merged into
    one [B, S, head_dim] cos/sin as ``apply_multimodal_rotary_pos_emb`` merges them, so that the
    plain rotary application of the Qwen2 decoder gives the multimodal result."""

    def __init__(self, rotary: nn.Module, section: list[int]):
        super().__init__()
        self.rotary, self.section = rotary, list(section) * 2

    def forward(self, x, position_ids):
        cos, sin = self.rotary(x, position_ids)
        return self._merge(cos), self._merge(sin)

    def _merge(self, t: torch.Tensor) -> torch.Tensor:
        return torch.cat([m[i % 3] for i, m in enumerate(t.split(self.section, dim=-1))], dim=-1)


class Qwen25VLDecoderWithCache(Qwen2DecoderWithCache):
    """Qwen2 decoder + lm_head with explicit past tensors, on 3-D positions given as text positions + deltas."""

    def __init__(self, model):
        super().__init__(model)
        self.rotary_emb = MropeRotary(self.rotary_emb, model.config.text_config.rope_scaling["mrope_section"])

    def forward(self, inputs_embeds, attention_mask, position_ids, mrope_deltas, logits_positions, past_key_values):
        rope = torch.cat([position_ids[None], position_ids[None] + mrope_deltas], dim=0)
        return super().forward(inputs_embeds, attention_mask, rope, logits_positions, past_key_values)


# -- optimum configs -------------------------------------------------------------------------------

class QwenVisionOnnxConfig(TupleOnnxConfig):
    """vision.onnx: patches in window order → merged features."""

    @property
    def inputs(self):
        return {name: {0: "patches"} for name in ("pixel_values", "position_hw", "window_segments", "image_segments")}

    @property
    def outputs(self):
        return {"image_features": {0: "tokens"}}

    def generate_dummy_inputs(self, framework: str = "pt", **_):
        from guardedge.runtime.architectures.qwen2_5_vl.onnx import VisionGeometry

        vision = self._config.vision_config
        layout = VisionGeometry(vision.to_dict())(torch.tensor(DUMMY_GRIDS))
        n = layout["patch_order"].shape[0]
        features = vision.in_channels * vision.temporal_patch_size * vision.patch_size ** 2
        return {"pixel_values": torch.randn(n, features, dtype=self.torch_dtype),
                **{k: torch.from_numpy(layout[k]) for k in ("position_hw", "window_segments", "image_segments")}}


class QwenDecoderOnnxConfig(DecoderOnnxConfig):
    """decoder.onnx: LLaVA-OneVision's contract plus ``mrope_deltas`` [2, B, S] after position_ids."""

    EXTRA_INPUTS = {"mrope_deltas": {1: "batch_size", 2: "sequence_length"}}

    def extra_dummy_inputs(self, batch_size: int, sequence_length: int) -> dict[str, torch.Tensor]:
        deltas = torch.zeros(2, batch_size, sequence_length, dtype=torch.long)
        deltas[:, 0, 0] = torch.tensor([1, 2])  # an image token's height/width offsets, exercised while tracing
        return {"mrope_deltas": deltas}


SPEC = OnnxSpec(
    model_type="qwen2_5_vl",
    transformers_class="Qwen2_5_VLForConditionalGeneration",
    components={"vision": (QwenVisionFeatures, QwenVisionOnnxConfig),
                "embed": (TokenEmbed, EmbedOnnxConfig),
                "decoder": (Qwen25VLDecoderWithCache, QwenDecoderOnnxConfig)},
    prepare=pretranspose_text_linears,
)

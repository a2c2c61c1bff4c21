"""LLaVA-OneVision (LlavaGuard v1.2) as three ONNX components, on the shared vision + embed + decoder
contract (export/onnx_embed_decoder.py: the embed component and the decoder's config are that module's).

* ``vision``  — pixel_values [patches, 3, H, W] (every real anyres patch of the batch's images,
  base view first per image) → ``image_features`` [patches, tokens, hidden] (SigLIP tower at the
  configured feature layer and select strategy, then the projector) and ``image_newline``
  [patches, hidden] (the learned row separator, a constant the host needs beside the features,
  repeated so that the exporter keeps it a named output).
* ``embed``   — input_ids [B, S] → ``inputs_embeds`` [B, S, hidden] (the token embedding table;
  the host writes the image features over the image tokens' rows at prefill).
* ``decoder`` — inputs_embeds [B, S, hidden], attention_mask [B, past+S], position_ids [B, S],
  logits_positions [K], ``past_key_values.{l}.key/.value`` [B, kv, past, hd] → ``logits``
  [B, K, vocab] (fp32) and ``present.{l}.key/.value`` [B, kv, past+S, hd]; prefill is past = 0.
  Qwen2: GQA with biased q/k/v projections, RoPE from position_ids, RMSNorm.

On the host (runtime/backends/onnx_llava_onevision.py), not in a graph: the anyres packing — the
tiles' features laid out as the image, unpadded to the original aspect ratio, bilinearly shrunk
when over anyres_max_9's budget, a newline per row, the base view first. Its slice bounds and
resize target are computed from each image's size (values, not shapes), which the TorchScript
exporter would freeze as constants of the dummy image; the host runs transformers' own
``pack_image_features`` instead, so it is exact by construction and costs ~1 ms an image.

    from guardedge.export.onnx_specs import spec_for   # guardedge export onnx picks this by model_type
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.models.qwen2.modeling_qwen2 import apply_rotary_pos_emb

from guardedge.export.onnx_configs import _attention, _mlp, _mm, pretranspose_text_linears, self_attention_bias
from guardedge.export.onnx_embed_decoder import DecoderOnnxConfig, DecoderWithCache, EmbedOnnxConfig, ImagesOnnxConfig, TokenEmbed
from guardedge.export.onnx_specs import OnnxSpec
from guardedge.runtime.errors import GuardError


def _linear(x: torch.Tensor, linear: nn.Linear) -> torch.Tensor:
    """x @ W (+ b) for a weight stored [in, out] (pretranspose_text_linears); Qwen2's q/k/v have biases."""
    out = _mm(x, linear)
    return out + linear.bias if linear.bias is not None else out


class LlavaVisionFeatures(nn.Module):
    """Vision tower + projector on a flat batch of patches: everything about an image that is a tensor op."""

    def __init__(self, model):
        super().__init__()
        core, config = model.model, model.config
        self.config = config  # optimum's export_pytorch reads it
        self.tower, self.projector, self.newline = core.vision_tower, core.multi_modal_projector, core.image_newline
        self.layer, self.strategy = config.vision_feature_layer, config.vision_feature_select_strategy

    def forward(self, pixel_values):
        hidden = self.tower(pixel_values, output_hidden_states=True).hidden_states
        if isinstance(self.layer, int):
            selected = hidden[self.layer]
        else:
            selected = torch.cat([hidden[i] for i in self.layer], dim=-1)
        if self.strategy == "default":
            selected = selected[:, 1:]
        # The newline leaves as an output, one copy per patch: a shape tied to the input keeps the
        # exporter from folding it into an unnamed constant output; the host reads row 0.
        return self.projector(selected), self.newline[None].expand(pixel_values.shape[0], -1)


class Qwen2DecoderWithCache(DecoderWithCache):
    """Qwen2 + lm_head on inputs_embeds with explicit past tensors; logits at ``logits_positions`` only."""

    def __init__(self, model):
        super().__init__()
        text = model.model.language_model
        self.config, config = model.config, text.config
        if getattr(config, "use_sliding_window", False) and "sliding_attention" in (config.layer_types or []):
            raise GuardError("export onnx: Qwen2 sliding-window attention is not exported (LlavaGuard v1.2 does not use it)")
        self.layers, self.norm, self.rotary_emb, self.lm_head = text.layers, text.norm, text.rotary_emb, model.lm_head
        self.heads, self.kv_heads = config.num_attention_heads, config.num_key_value_heads

    def forward(self, inputs_embeds, attention_mask, position_ids, logits_positions, past_key_values):
        h = inputs_embeds
        bias = self_attention_bias(attention_mask, h.shape[1], h.dtype)
        cos, sin = self.rotary_emb(h, position_ids)
        return self.run_layers(h, logits_positions, past_key_values, bias, cos, sin)

    def _layer(self, layer, h, past_k, past_v, bias, cos, sin):
        attn = layer.self_attn
        x = layer.input_layernorm(h)
        q = self._heads(_linear(x, attn.q_proj), self.heads, attn.head_dim)
        k = self._heads(_linear(x, attn.k_proj), self.kv_heads, attn.head_dim)
        v = self._heads(_linear(x, attn.v_proj), self.kv_heads, attn.head_dim)
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
        k, v = torch.cat([past_k, k], dim=2), torch.cat([past_v, v], dim=2)
        h = h + _linear(_attention(q, k, v, bias, attn.scaling), attn.o_proj)
        return h + _mlp(layer.mlp, layer.post_attention_layernorm(h)), k, v


# -- optimum configs -------------------------------------------------------------------------------

class LlavaVisionOnnxConfig(ImagesOnnxConfig):
    """vision.onnx: patches → projected features (+ the newline vector)."""

    AXIS, OUTPUTS, DUMMY_COUNT = "patches", ("image_features", "image_newline"), 3


SPEC = OnnxSpec(
    model_type="llava_onevision",
    transformers_class="LlavaOnevisionForConditionalGeneration",
    components={"vision": (LlavaVisionFeatures, LlavaVisionOnnxConfig),
                "embed": (TokenEmbed, EmbedOnnxConfig),
                "decoder": (Qwen2DecoderWithCache, DecoderOnnxConfig)},
    prepare=pretranspose_text_linears,
)

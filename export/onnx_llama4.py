"""Llama 4 (Llama Guard 4) as three ONNX components, on the shared vision + embed + decoder contract
(export/onnx_embed_decoder.py: the embed component and the decoder's config are that module's).

* ``vision``  — pixel_values [tiles, 3, t, t] (every tile of the batch's images, in prompt order)
  → ``image_features`` [tiles, T, hidden]: the Llama 4 vision encoder, its pixel-shuffle adapter
  and the projector. The encoder's 2-D rotary embedding is complex-valued in transformers (which
  the exporter cannot trace); here it is the same rotation in real arithmetic on precomputed
  cos/sin, and the unfold + linear patch embedding is the equal strided convolution.
* ``embed``   — input_ids [B, S] → ``inputs_embeds`` [B, S, hidden]; the host writes the image
  features over the ``<|patch|>`` rows at prefill (as ``masked_scatter`` does).
* ``decoder`` — inputs_embeds, attention_mask [B, past+S], position_ids [B, S], logits_positions
  [K], ``past_key_values.{l}.key/.value`` → ``logits`` [B, K, vocab] (fp32) and ``present.*``.
  The dense Llama 4 text model: RoPE on interleaved pairs (real arithmetic) and L2 qk-norm on the
  RoPE layers; on the NoPE layers the attention temperature from each row's own positions (what the
  PyTorch plug-in applies: runtime/architectures/llama4/forward.py). Chunked attention and experts
  are refused: Llama Guard 4 has neither (``attention_chunk_size: null``, dense layers).

    from guardedge.export.onnx_specs import spec_for   # guardedge export onnx picks this by model_type
"""

from __future__ import annotations

import torch
from torch import nn

from guardedge.export.onnx_configs import _attention, _mm, self_attention_bias, transpose_linears
from guardedge.export.onnx_embed_decoder import DecoderOnnxConfig, DecoderWithCache, EmbedOnnxConfig, ImagesOnnxConfig, TokenEmbed
from guardedge.export.onnx_specs import OnnxSpec
from guardedge.runtime.errors import GuardError


def prepare(model) -> None:
    """Refuse what is not exported, then store the text linears [in, out] (one MatMul initializer each)."""
    text = model.config.text_config
    if text.attention_chunk_size is not None:
        raise GuardError("export onnx: Llama 4 chunked attention is not exported (Llama Guard 4 has attention_chunk_size null)")
    if text.moe_layers:
        raise GuardError("export onnx: Llama 4 mixture-of-experts layers are not exported (Llama Guard 4 is dense)")
    transpose_linears([*model.language_model.model.layers.modules(), model.language_model.lm_head])


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [..., d] rotated pairwise (2i, 2i+1) by cos/sin [..., d/2] broadcast: the complex product, in reals."""
    pairs = x.float().reshape(*x.shape[:-1], -1, 2)
    even, odd = pairs[..., 0], pairs[..., 1]
    return torch.stack([even * cos - odd * sin, even * sin + odd * cos], dim=-1).flatten(-2).type_as(x)


class Llama4VisionFeatures(nn.Module):
    """Vision encoder + adapter + projector on a flat batch of tiles."""

    def __init__(self, model):
        super().__init__()
        self.config = model.config
        vision = model.vision_model
        self.vision, self.projector = vision, model.multi_modal_projector
        patch = vision.patch_embedding
        self.patch = vision.patch_size
        self.patch_weight = nn.Parameter(patch.linear.weight.detach().view(vision.hidden_size, vision.num_channels, self.patch, self.patch),
                                         requires_grad=False)
        freqs = vision.rotary_embedding.freqs_ci  # complex [patches + 1, 1, d/2]
        self.register_buffer("cos", freqs.real.float()[None], persistent=False)  # [1, N, 1, d/2]
        self.register_buffer("sin", freqs.imag.float()[None], persistent=False)

    def forward(self, pixel_values):
        v = self.vision
        h = nn.functional.conv2d(pixel_values, self.patch_weight, stride=self.patch).flatten(2).transpose(1, 2)
        h = torch.cat([h, v.class_embedding.expand(h.shape[0], 1, -1)], dim=1) + v.positional_embedding_vlm
        h = v.layernorm_pre(h)
        for layer in v.model.layers:
            h = h + self._attention(layer.self_attn, layer.input_layernorm(h))
            h = h + layer.mlp(layer.post_attention_layernorm(h))
        h = v.vision_adapter(v.layernorm_post(h)[:, :-1])
        return (self.projector(h),)

    def _attention(self, attn, x):
        b, n, _ = x.shape
        q = _rotate(attn.q_proj(x).view(b, n, attn.num_heads, attn.head_dim), self.cos, self.sin).transpose(1, 2)
        k = _rotate(attn.k_proj(x).view(b, n, attn.num_heads, attn.head_dim), self.cos, self.sin).transpose(1, 2)
        v = attn.v_proj(x).view(b, n, attn.num_heads, attn.head_dim).transpose(1, 2)
        weights = torch.softmax(torch.matmul(q, k.transpose(-1, -2)) * attn.scaling, dim=-1)
        return attn.o_proj(torch.matmul(weights, v).transpose(1, 2).reshape(b, n, -1))


class Llama4DecoderWithCache(DecoderWithCache):
    """The dense Llama 4 text model + lm_head with explicit past tensors; logits at ``logits_positions`` only."""

    def __init__(self, model):
        super().__init__()
        text = model.language_model.model
        self.config, config = model.config, text.config
        self.layers, self.norm, self.lm_head = text.layers, text.norm, model.language_model.lm_head
        self.register_buffer("inv_freq", text.rotary_emb.inv_freq.float(), persistent=False)
        self.rope_scale = float(text.rotary_emb.attention_scaling)
        self.heads, self.kv_heads, self.head_dim = config.num_attention_heads, config.num_key_value_heads, config.head_dim
        self.temperature = bool(config.attn_temperature_tuning)
        self.floor, self.attn_scale = float(config.floor_scale), float(config.attn_scale)

    def forward(self, inputs_embeds, attention_mask, position_ids, logits_positions, past_key_values):
        h = inputs_embeds
        bias = self_attention_bias(attention_mask, h.shape[1], h.dtype)
        angles = position_ids.float()[..., None] * self.inv_freq  # [B, S, d/2]
        cos, sin = (angles.cos() * self.rope_scale)[:, :, None], (angles.sin() * self.rope_scale)[:, :, None]
        scales = (torch.log1p(torch.floor((position_ids.float() + 1.0) / self.floor)) * self.attn_scale + 1.0)[..., None, None]
        return self.run_layers(h, logits_positions, past_key_values, bias, cos, sin, scales)

    def _layer(self, layer, h, past_k, past_v, bias, cos, sin, scales):
        attn = layer.self_attn
        x = layer.input_layernorm(h)
        b, s, _ = x.shape
        q = _mm(x, attn.q_proj).view(b, s, self.heads, self.head_dim)
        k = _mm(x, attn.k_proj).view(b, s, self.kv_heads, self.head_dim)
        v = _mm(x, attn.v_proj).view(b, s, self.kv_heads, self.head_dim).transpose(1, 2)
        if attn.use_rope:
            q, k = _rotate(q, cos, sin), _rotate(k, cos, sin)
            if hasattr(attn, "qk_norm"):
                q, k = attn.qk_norm(q), attn.qk_norm(k)
        elif self.temperature:
            q = (q * scales).to(q.dtype)
        k, v = torch.cat([past_k, k.transpose(1, 2)], dim=2), torch.cat([past_v, v], dim=2)
        h = h + _mm(_attention(q.transpose(1, 2), k, v, bias, attn.scaling), attn.o_proj)
        mlp = layer.feed_forward
        x = layer.post_attention_layernorm(h)
        return h + _mm(mlp.activation_fn(_mm(x, mlp.gate_proj)) * _mm(x, mlp.up_proj), mlp.down_proj), k, v


# -- optimum configs -------------------------------------------------------------------------------

class Llama4VisionOnnxConfig(ImagesOnnxConfig):
    """vision.onnx: tiles → projected features."""

    AXIS, DUMMY_COUNT = "tiles", 3


SPEC = OnnxSpec(
    model_type="llama4",
    transformers_class="Llama4ForConditionalGeneration",
    components={"vision": (Llama4VisionFeatures, Llama4VisionOnnxConfig),
                "embed": (TokenEmbed, EmbedOnnxConfig),
                "decoder": (Llama4DecoderWithCache, DecoderOnnxConfig)},
    prepare=prepare,
)

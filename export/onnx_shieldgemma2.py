"""ShieldGemma 2 (Gemma 3) as three ONNX components, on the shared vision + embed + decoder contract
(export/onnx_embed_decoder.py; the decoder adds ``token_type_ids``).

* ``vision``  — pixel_values [images, 3, S, S] → ``image_features`` [images, soft tokens, hidden]
  (SigLIP tower, average pooling, soft-embedding norm and projection: ``get_image_features``).
* ``embed``   — input_ids [B, S] → ``inputs_embeds`` [B, S, hidden] (Gemma 3's scaled embedding; the
  host writes the image features over the soft tokens' rows at prefill, as ``masked_scatter``).
* ``decoder`` — inputs_embeds [B, S, hidden], attention_mask [B, past+S], position_ids [B, S],
  token_type_ids [B, S] (1 for the fed soft tokens), logits_positions [K],
  ``past_key_values.{l}.key/.value`` [B, kv, past, hd] → ``logits`` [B, K, vocab] (fp32) and
  ``present.{l}.key/.value`` [B, kv, past+S, hd]. Its masks are the architecture plug-in's, built in
  the graph: causal over kept columns, or both ways among one image's fed soft tokens; sliding
  layers also within the window, in positions (cumulative kept columns). Gemma 3: q/k RMSNorm,
  local and global rotary tables by layer type, (1 + w) RMSNorms before and after attention and MLP.

    from guardedge.export.onnx_specs import spec_for   # guardedge export onnx picks this by model_type
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.models.gemma3.modeling_gemma3 import apply_rotary_pos_emb

from guardedge.export.onnx_configs import _attention, _mlp, _mm, transpose_linears, untie
from guardedge.export.onnx_embed_decoder import DecoderOnnxConfig, DecoderWithCache, EmbedOnnxConfig, ImagesOnnxConfig, TokenEmbed
from guardedge.export.onnx_specs import OnnxSpec
from guardedge.runtime.errors import GuardError


def prepare(model) -> None:
    """Store the text linears and the output layer as [in, out] (one MatMul initializer each, named
    by its module path: ``layers.{i}.self_attn.q_proj.weight``, ``lm_head.weight``, which the
    architecture's module groups name; and no folded transposed copy while exporting). The output
    layer, tied to the embedding, gets its own copy; embed.onnx keeps the table."""
    untie(model.model.lm_head, model)
    transpose_linears([*model.model.model.language_model.layers.modules(), model.model.lm_head])


class Gemma3Vision(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.config = model.config  # optimum's export_pytorch reads it
        self.trunk = model.model.model

    def forward(self, pixel_values):
        return (self.trunk.get_image_features(pixel_values),)


def gemma3_biases(attention_mask, token_type_ids, window: int, dtype):
    """([B, 1, S, T] full-attention bias, the sliding layers' bias) for the last S of T columns."""
    total, seq = attention_mask.shape[1], token_type_ids.shape[1]
    k_idx = torch.ones_like(attention_mask[0]).cumsum(0) - 1
    q_idx = k_idx[total - seq:]
    causal = (k_idx[None, :] <= q_idx[:, None])[None] & attention_mask[:, None, :].bool()  # [B, S, T]
    image = token_type_ids == 1
    start = image & ~torch.cat([torch.zeros_like(image[:, :1]), image[:, :-1]], dim=1)
    group = torch.where(image, start.long().cumsum(-1), torch.zeros_like(token_type_ids))
    fed = image[:, :, None] & image[:, None, :] & (group[:, :, None] == group[:, None, :])  # [B, S, S]
    block = torch.cat([torch.zeros_like(causal[:, :, : total - seq]), fed], dim=2)
    positions = attention_mask.cumsum(-1) - 1
    near = (positions[:, total - seq:, None] - positions[:, None, :]) < window
    low = torch.finfo(dtype).min
    full = torch.where(causal | block, 0.0, low).to(dtype)[:, None]
    sliding = torch.where((causal & near) | block, 0.0, low).to(dtype)[:, None]
    return full, sliding


class Gemma3DecoderWithCache(DecoderWithCache):
    """Gemma 3's text model + output layer on inputs_embeds with explicit past tensors; logits at
    ``logits_positions`` only."""

    def __init__(self, model):
        super().__init__()
        text = model.model.model.language_model
        self.config, config = model.config, text.config
        if config.final_logit_softcapping is not None or config.attn_logit_softcapping is not None:
            raise GuardError("export onnx: Gemma 3 logit soft-capping is not exported (ShieldGemma 2 does not use it)")
        self.layers, self.norm, self.lm_head = text.layers, text.norm, model.model.lm_head
        self.rotary, self.rotary_local = text.rotary_emb, text.rotary_emb_local
        self.heads, self.kv_heads = config.num_attention_heads, config.num_key_value_heads
        self.window = config.sliding_window or 2**30

    def forward(self, inputs_embeds, attention_mask, position_ids, token_type_ids, logits_positions, past_key_values):
        h = inputs_embeds
        full, sliding = gemma3_biases(attention_mask, token_type_ids, self.window, h.dtype)
        rope = {False: self.rotary(h, position_ids), True: self.rotary_local(h, position_ids)}
        return self.run_layers(h, logits_positions, past_key_values, {False: full, True: sliding}, rope)

    def _layer(self, layer, h, past_k, past_v, biases, rope):
        """One layer; sliding layers take the window's bias and the local rotary table."""
        attn = layer.self_attn
        bias, (cos, sin) = biases[attn.is_sliding], rope[attn.is_sliding]
        x = layer.input_layernorm(h)
        q = attn.q_norm(self._heads(_mm(x, attn.q_proj), self.heads, attn.head_dim))
        k = attn.k_norm(self._heads(_mm(x, attn.k_proj), self.kv_heads, attn.head_dim))
        v = self._heads(_mm(x, attn.v_proj), self.kv_heads, attn.head_dim)
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
        k, v = torch.cat([past_k, k], dim=2), torch.cat([past_v, v], dim=2)
        h = h + layer.post_attention_layernorm(_mm(_attention(q, k, v, bias, attn.scaling), attn.o_proj))
        x = layer.pre_feedforward_layernorm(h)
        return h + layer.post_feedforward_layernorm(_mlp(layer.mlp, x)), k, v


# -- optimum configs -------------------------------------------------------------------------------

class Gemma3VisionOnnxConfig(ImagesOnnxConfig):
    """vision.onnx: images → soft-token features (axis ``images``, the shared default)."""


class Gemma3DecoderOnnxConfig(DecoderOnnxConfig):
    """decoder.onnx: the shared contract plus ``token_type_ids`` [B, S] after position_ids."""

    EXTRA_INPUTS = {"token_type_ids": {0: "batch_size", 1: "sequence_length"}}
    DUMMY_SEQUENCE_LENGTH = 5

    def extra_dummy_inputs(self, batch_size: int, sequence_length: int) -> dict[str, torch.Tensor]:
        types = torch.zeros(batch_size, sequence_length, dtype=torch.long)
        types[:, 1:3] = 1  # an image block, so the export traces the or-mask with real values
        return {"token_type_ids": types}


SPEC = OnnxSpec(
    model_type="shieldgemma2",
    transformers_class="ShieldGemma2ForImageClassification",
    components={"vision": (Gemma3Vision, Gemma3VisionOnnxConfig),
                "embed": (TokenEmbed, EmbedOnnxConfig),
                "decoder": (Gemma3DecoderWithCache, Gemma3DecoderOnnxConfig)},
    prepare=prepare,
)

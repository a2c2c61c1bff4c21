"""LLaVA-OneVision (LlavaGuard v1.2) as three ONNX components, declared like the Mllama ones.

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

from guardedge.export.onnx_configs import TupleOnnxConfig, _attention, _mm, pretranspose_text_linears, self_attention_bias
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


class LlavaEmbed(nn.Module):
    """The token embedding table as a graph: Gather on ORT's device, no table copy on the host."""

    def __init__(self, model):
        super().__init__()
        self.config = model.config
        self.embed_tokens = model.model.language_model.embed_tokens

    def forward(self, input_ids):
        return (self.embed_tokens(input_ids),)


class Qwen2DecoderWithCache(nn.Module):
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
        presents = []
        for layer, (past_k, past_v) in zip(self.layers, past_key_values):
            h, k, v = self._layer(layer, h, past_k, past_v, bias, cos, sin)
            presents += [k, v]
        logits = _mm(self.norm(h.index_select(1, logits_positions)), self.lm_head).float()
        return (logits, *presents)

    @staticmethod
    def _heads(x, heads: int, head_dim: int):
        return x.reshape(x.shape[0], x.shape[1], heads, head_dim).transpose(1, 2)

    def _layer(self, layer, h, past_k, past_v, bias, cos, sin):
        attn = layer.self_attn
        x = layer.input_layernorm(h)
        q = self._heads(_linear(x, attn.q_proj), self.heads, attn.head_dim)
        k = self._heads(_linear(x, attn.k_proj), self.kv_heads, attn.head_dim)
        v = self._heads(_linear(x, attn.v_proj), self.kv_heads, attn.head_dim)
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
        k, v = torch.cat([past_k, k], dim=2), torch.cat([past_v, v], dim=2)
        h = h + _linear(_attention(q, k, v, bias, attn.scaling), attn.o_proj)
        mlp = layer.mlp
        x = layer.post_attention_layernorm(h)
        return h + _mm(mlp.act_fn(_mm(x, mlp.gate_proj)) * _mm(x, mlp.up_proj), mlp.down_proj), k, v


# -- optimum configs -------------------------------------------------------------------------------

class _LlavaOnnxConfig(TupleOnnxConfig):
    def __init__(self, config, float_dtype: str = "fp32"):
        super().__init__(config, float_dtype=float_dtype)
        text = config.text_config
        self.layers, self.hidden = text.num_hidden_layers, text.hidden_size
        self.kv_heads = text.num_key_value_heads
        self.head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads

    def _past_axes(self, prefix: str, length_axis: str) -> dict[str, dict[int, str]]:
        return {f"{prefix}.{i}.{kind}": {0: "batch_size", 2: length_axis} for i in range(self.layers) for kind in ("key", "value")}


class LlavaVisionOnnxConfig(_LlavaOnnxConfig):
    """vision.onnx: patches → projected features (+ the newline vector)."""

    @property
    def inputs(self):
        return {"pixel_values": {0: "patches"}}

    @property
    def outputs(self):
        return {"image_features": {0: "patches"}, "image_newline": {0: "patches"}}

    def generate_dummy_inputs(self, framework: str = "pt", patches: int = 3, **_):
        vision = self._config.vision_config
        return {"pixel_values": torch.randn(patches, vision.num_channels, vision.image_size, vision.image_size, dtype=self.torch_dtype)}


class LlavaEmbedOnnxConfig(_LlavaOnnxConfig):
    """embed.onnx: token ids → embeddings."""

    @property
    def inputs(self):
        return {"input_ids": {0: "batch_size", 1: "sequence_length"}}

    @property
    def outputs(self):
        return {"inputs_embeds": {0: "batch_size", 1: "sequence_length"}}

    def generate_dummy_inputs(self, framework: str = "pt", batch_size: int = 2, sequence_length: int = 3, **_):
        return {"input_ids": torch.randint(0, 1000, (batch_size, sequence_length))}


class LlavaDecoderOnnxConfig(_LlavaOnnxConfig):
    """decoder.onnx: one prefill or decode step with an explicit KV cache."""

    @property
    def inputs(self):
        return {"inputs_embeds": {0: "batch_size", 1: "sequence_length"},
                "attention_mask": {0: "batch_size", 1: "total_length"},
                "position_ids": {0: "batch_size", 1: "sequence_length"},
                "logits_positions": {0: "logits_length"},
                **self._past_axes("past_key_values", "past_length")}

    @property
    def outputs(self):
        return {"logits": {0: "batch_size", 1: "logits_length"}, **self._past_axes("present", "total_length")}

    def generate_dummy_inputs(self, framework: str = "pt", batch_size: int = 2, sequence_length: int = 3,
                              past_length: int = 4, **_):
        def kv():
            return tuple(torch.randn(batch_size, self.kv_heads, past_length, self.head_dim, dtype=self.torch_dtype) for _ in range(2))

        total = past_length + sequence_length
        return {"inputs_embeds": torch.randn(batch_size, sequence_length, self.hidden, dtype=self.torch_dtype),
                "attention_mask": torch.ones(batch_size, total, dtype=torch.long),
                "position_ids": torch.arange(past_length, total).expand(batch_size, -1).contiguous(),
                "logits_positions": torch.arange(sequence_length - 2, sequence_length),
                "past_key_values": tuple(kv() for _ in range(self.layers))}


SPEC = OnnxSpec(
    model_type="llava_onevision",
    transformers_class="LlavaOnevisionForConditionalGeneration",
    components={"vision": (LlavaVisionFeatures, LlavaVisionOnnxConfig),
                "embed": (LlavaEmbed, LlavaEmbedOnnxConfig),
                "decoder": (Qwen2DecoderWithCache, LlavaDecoderOnnxConfig)},
    prepare=pretranspose_text_linears,
)

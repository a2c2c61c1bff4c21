"""ShieldGemma 2 (Gemma 3) as three ONNX components, declared like the LLaVA-OneVision ones.

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

from guardedge.export.onnx_configs import TupleOnnxConfig, _attention, _mlp, _mm
from guardedge.export.onnx_specs import OnnxSpec
from guardedge.runtime.errors import GuardError


def prepare(model) -> None:
    """Store the text linears and the output layer as [in, out] (one MatMul initializer each, named
    by its module path: ``layers.{i}.self_attn.q_proj.weight``, ``lm_head.weight``, which the
    architecture's module groups name; and no folded transposed copy while exporting). The output
    layer, tied to the embedding, gets its own copy; embed.onnx keeps the table."""
    head = model.model.lm_head
    if head.weight is model.get_input_embeddings().weight:
        head.weight = nn.Parameter(head.weight.detach().clone(), requires_grad=False)
    for module in [*model.model.model.language_model.layers.modules(), head]:
        if isinstance(module, nn.Linear) and not getattr(module, "_guardedge_t", False):
            module.weight.data = module.weight.data.t().contiguous()
            module._guardedge_t = True


class Gemma3Vision(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.config = model.config  # optimum's export_pytorch reads it
        self.trunk = model.model.model

    def forward(self, pixel_values):
        return (self.trunk.get_image_features(pixel_values),)


class Gemma3Embed(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.config = model.config
        self.embed_tokens = model.model.model.language_model.embed_tokens  # scales by sqrt(hidden) itself

    def forward(self, input_ids):
        return (self.embed_tokens(input_ids),)


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


class Gemma3DecoderWithCache(nn.Module):
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
        presents = []
        for layer, (past_k, past_v) in zip(self.layers, past_key_values):
            local = layer.self_attn.is_sliding
            h, k, v = self._layer(layer, h, past_k, past_v, sliding if local else full, *rope[local])
            presents += [k, v]
        logits = _mm(self.norm(h.index_select(1, logits_positions)), self.lm_head).float()
        return (logits, *presents)

    @staticmethod
    def _heads(x, heads: int, head_dim: int):
        return x.reshape(x.shape[0], x.shape[1], heads, head_dim).transpose(1, 2)

    def _layer(self, layer, h, past_k, past_v, bias, cos, sin):
        attn = layer.self_attn
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

class _Gemma3OnnxConfig(TupleOnnxConfig):
    def __init__(self, config, float_dtype: str = "fp32"):
        super().__init__(config, float_dtype=float_dtype)
        text = config.text_config
        self.layers, self.hidden, self.kv_heads, self.head_dim = (
            text.num_hidden_layers, text.hidden_size, text.num_key_value_heads, text.head_dim)

    def _past_axes(self, prefix: str, length_axis: str) -> dict[str, dict[int, str]]:
        return {f"{prefix}.{i}.{kind}": {0: "batch_size", 2: length_axis} for i in range(self.layers) for kind in ("key", "value")}


class Gemma3VisionOnnxConfig(_Gemma3OnnxConfig):
    @property
    def inputs(self):
        return {"pixel_values": {0: "images"}}

    @property
    def outputs(self):
        return {"image_features": {0: "images"}}

    def generate_dummy_inputs(self, framework: str = "pt", images: int = 2, **_):
        vision = self._config.vision_config
        return {"pixel_values": torch.randn(images, vision.num_channels, vision.image_size, vision.image_size, dtype=self.torch_dtype)}


class Gemma3EmbedOnnxConfig(_Gemma3OnnxConfig):
    @property
    def inputs(self):
        return {"input_ids": {0: "batch_size", 1: "sequence_length"}}

    @property
    def outputs(self):
        return {"inputs_embeds": {0: "batch_size", 1: "sequence_length"}}

    def generate_dummy_inputs(self, framework: str = "pt", batch_size: int = 2, sequence_length: int = 3, **_):
        return {"input_ids": torch.randint(0, 1000, (batch_size, sequence_length))}


class Gemma3DecoderOnnxConfig(_Gemma3OnnxConfig):
    @property
    def inputs(self):
        return {"inputs_embeds": {0: "batch_size", 1: "sequence_length"},
                "attention_mask": {0: "batch_size", 1: "total_length"},
                "position_ids": {0: "batch_size", 1: "sequence_length"},
                "token_type_ids": {0: "batch_size", 1: "sequence_length"},
                "logits_positions": {0: "logits_length"},
                **self._past_axes("past_key_values", "past_length")}

    @property
    def outputs(self):
        return {"logits": {0: "batch_size", 1: "logits_length"}, **self._past_axes("present", "total_length")}

    def generate_dummy_inputs(self, framework: str = "pt", batch_size: int = 2, sequence_length: int = 5,
                              past_length: int = 4, **_):
        def kv():
            return tuple(torch.randn(batch_size, self.kv_heads, past_length, self.head_dim, dtype=self.torch_dtype) for _ in range(2))

        total = past_length + sequence_length
        types = torch.zeros(batch_size, sequence_length, dtype=torch.long)
        types[:, 1:3] = 1  # an image block, so the export traces the or-mask with real values
        return {"inputs_embeds": torch.randn(batch_size, sequence_length, self.hidden, dtype=self.torch_dtype),
                "attention_mask": torch.ones(batch_size, total, dtype=torch.long),
                "position_ids": torch.arange(past_length, total).expand(batch_size, -1).contiguous(),
                "token_type_ids": types,
                "logits_positions": torch.arange(sequence_length - 2, sequence_length),
                "past_key_values": tuple(kv() for _ in range(self.layers))}


SPEC = OnnxSpec(
    model_type="shieldgemma2",
    transformers_class="ShieldGemma2ForImageClassification",
    components={"vision": (Gemma3Vision, Gemma3VisionOnnxConfig),
                "embed": (Gemma3Embed, Gemma3EmbedOnnxConfig),
                "decoder": (Gemma3DecoderWithCache, Gemma3DecoderOnnxConfig)},
    prepare=prepare,
)

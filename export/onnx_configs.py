"""Mllama as two ONNX components, declared the way optimum declares models.

* ``vision``  — pixel_values [b, 1, T, 3, H, W], aspect_ratio_ids [b, 1], aspect_ratio_mask [b, 1, T]
  → ``cross_key_values.{l}.key`` / ``.value`` [b, kv_heads, T·P, head_dim] for every cross-attention
  layer l. The vision tower, the projector and each cross layer's k_proj/v_proj/k_norm run here, ONCE
  per request: nothing that depends only on the image is recomputed per generated token.
* ``decoder`` — input_ids [B, S], attention_mask [B, past+S], position_ids [B, S],
  cross_attention_mask [B, S, 1, T], logits_positions [K], ``past_key_values.{l}.key/.value``
  [B, kv, past, hd] for the self-attention layers, ``cross_key_values.{l}.*`` → ``logits``
  [B, K, vocab] (fp32, at the K positions asked for) and ``present.{l}.key/.value``
  [B, kv, past+S, hd]. Prefill is the same graph with past = 0.

Each component is a small wrapper module (why: HF's Mllama forward keeps its cache in a
``DynamicCache`` and decides per call whether to skip cross layers, neither of which traces into one
graph) plus an optimum ``OnnxConfig`` that names inputs, outputs and dynamic axes and makes the dummy
inputs; ``export_pytorch`` from optimum does the export. The decoder loop re-uses HF's own modules
(norms, rotary embedding, activation) and reproduces ``MllamaModel``'s cross-attention mask rules
exactly (a text row that sees no tile attends uniformly and its MLP output is zeroed).
"""

from __future__ import annotations

import functools

import torch
from optimum.exporters.onnx.base import OnnxConfig
from optimum.exporters.onnx.model_patcher import ModelPatcher
from optimum.utils import NormalizedConfig
from torch import nn
from transformers.models.mllama.modeling_mllama import apply_rotary_pos_emb

from guardedge.export.onnx_specs import OnnxSpec


def layer_ids(text_config) -> tuple[list[int], list[int]]:
    """(self-attention layer indices, cross-attention layer indices) of the text model."""
    cross = list(text_config.cross_attention_layers)
    return [i for i in range(text_config.num_hidden_layers) if i not in cross], cross


def pretranspose_text_linears(model) -> None:
    """Store every text Linear weight (and lm_head) as [in, out], in place, one tensor at a time.

    Why: the legacy exporter turns ``x @ W.T`` into a folded Transpose, i.e. a SECOND copy of each
    weight while exporting (~43 GB more for the 11B decoder in fp32). A [in, out] weight is a plain
    MatMul initializer (also what MatMulNBits expects). The model is export-only afterwards.
    """
    untie(model.lm_head, model)  # Tied (e.g. Qwen2-0.5B)
    transpose_linears([*model.model.language_model.modules(), model.lm_head])


def untie(head: nn.Linear, model) -> None:
    """A head tied to the input embedding gets its own copy; the embedding keeps [vocab, hidden]."""
    if head.weight is model.get_input_embeddings().weight:
        head.weight = nn.Parameter(head.weight.detach().clone(), requires_grad=False)


def transpose_linears(modules) -> None:
    """Every nn.Linear among ``modules`` stored [in, out], in place, once (a marked module is skipped)."""
    for module in modules:
        if isinstance(module, nn.Linear) and not getattr(module, "_guardedge_t", False):
            module.weight.data = module.weight.data.t().contiguous()
            module._guardedge_t = True


def _mm(x: torch.Tensor, linear: nn.Linear) -> torch.Tensor:
    return torch.matmul(x, linear.weight)  # weight is [in, out] after pretranspose_text_linears


def _attention(q, k, v, bias, scaling: float) -> torch.Tensor:
    """Grouped-query attention without repeating K/V: q [B, H, S, d], k/v [B, KV, T, d], bias [B, 1, S, T]."""
    b, heads, s, d = q.shape
    kv = k.shape[1]
    q5 = q.reshape(b, kv, heads // kv, s, d)
    weights = torch.matmul(q5, k[:, :, None].transpose(-1, -2)) * scaling + bias[:, :, None]
    weights = torch.softmax(weights.float(), dim=-1).to(q.dtype)
    out = torch.matmul(weights, v[:, :, None]).reshape(b, heads, s, d)
    return out.transpose(1, 2).reshape(b, s, heads * d)


def _mlp(mlp, x):
    return _mm(mlp.act_fn(_mm(x, mlp.gate_proj)) * _mm(x, mlp.up_proj), mlp.down_proj)


def self_attention_bias(attention_mask: torch.Tensor, seq: int, dtype: torch.dtype) -> torch.Tensor:
    """Causal + padding bias [B, 1, S, past+S] for queries at the last ``seq`` positions."""
    k_pos = torch.ones_like(attention_mask[0]).cumsum(0) - 1
    q_pos = k_pos[k_pos.shape[0] - seq :]
    allowed = (k_pos[None, :] <= q_pos[:, None])[None] & attention_mask[:, None, :].bool()
    return torch.where(allowed, 0.0, torch.finfo(dtype).min).to(dtype)[:, None]


def cross_attention_bias(mask: torch.Tensor, vision_len: int, dtype: torch.dtype):
    """As transformers' _prepare_cross_attention_mask: ([B, 1, S, V] bias, [B, S, 1] row mask)."""
    b, s, _, tiles = mask.shape
    per_tile = vision_len // tiles
    allowed = mask[:, :, 0, :, None].expand(b, s, tiles, per_tile).reshape(b, s, tiles * per_tile).bool()
    row = allowed.any(-1, keepdim=True).to(dtype)  # a row that sees no tile: bias 0, MLP zeroed
    bias = torch.where(allowed, 0.0, torch.finfo(dtype).min).to(dtype) * row
    return bias[:, None], row


class MllamaVisionToCrossKV(nn.Module):
    """Vision tower + projector + the cross layers' K/V projections: the image's whole cost, once."""

    def __init__(self, model):
        super().__init__()
        core = model.model
        self.config = model.config
        self.vision = core.vision_model
        self.projector = core.multi_modal_projector
        _, cross = layer_ids(model.config.text_config)
        self.cross = nn.ModuleList(core.language_model.layers[i].cross_attn for i in cross)

    def forward(self, pixel_values, aspect_ratio_ids, aspect_ratio_mask):
        states = self.vision(pixel_values=pixel_values, aspect_ratio_ids=aspect_ratio_ids,
                             aspect_ratio_mask=aspect_ratio_mask).last_hidden_state
        states = self.projector(states)  # [b, 1, T, P, hidden]
        b = states.shape[0]
        states = states.reshape(b, -1, states.shape[-1])  # [b, T*P, hidden], tile-major as MllamaModel
        out = []
        for attn in self.cross:
            k = _mm(states, attn.k_proj).reshape(b, -1, attn.num_key_value_heads, attn.head_dim).transpose(1, 2)
            v = _mm(states, attn.v_proj).reshape(b, -1, attn.num_key_value_heads, attn.head_dim).transpose(1, 2)
            out += [attn.k_norm(k), v]
        return tuple(out)


class MllamaDecoderWithCache(nn.Module):
    """The text model + lm_head with explicit past tensors; logits at ``logits_positions`` only.

    ``logits_positions`` (int64 [K], indices into this call's tokens, the same for every row) picks
    where the output layer runs: the last position at a plain step; the verdict position and the
    draft's at prefill, and every fed position at a drafted decode step (runtime/decoding.py).
    Never all positions of a prefill: that would be [B, prompt, vocab] floats.
    """

    def __init__(self, model):
        super().__init__()
        text = model.model.language_model
        self.config = model.config
        self.embed_tokens, self.layers, self.norm, self.rotary_emb = text.embed_tokens, text.layers, text.norm, text.rotary_emb
        self.lm_head = model.lm_head
        self.self_ids, self.cross_ids = layer_ids(model.config.text_config)

    def forward(self, input_ids, attention_mask, position_ids, cross_attention_mask, logits_positions,
                past_key_values, cross_key_values):
        h = self.embed_tokens(input_ids)
        self_bias = self_attention_bias(attention_mask, input_ids.shape[1], h.dtype)
        cross_bias, row = cross_attention_bias(cross_attention_mask, cross_key_values[0][0].shape[2], h.dtype)
        cos, sin = self.rotary_emb(h, position_ids)
        past, cross = iter(past_key_values), iter(cross_key_values)
        presents = []
        for i, layer in enumerate(self.layers):
            if i in self.cross_ids:
                h = self._cross_layer(layer, h, *next(cross), cross_bias, row)
            else:
                h, k, v = self._self_layer(layer, h, *next(past), self_bias, cos, sin)
                presents += [k, v]
        logits = _mm(self.norm(h.index_select(1, logits_positions)), self.lm_head).float()
        return (logits, *presents)

    @staticmethod
    def _heads(x, attn, heads: int):
        return x.reshape(x.shape[0], x.shape[1], heads, attn.head_dim).transpose(1, 2)

    def _self_layer(self, layer, h, past_k, past_v, bias, cos, sin):
        attn = layer.self_attn
        x = layer.input_layernorm(h)
        q = self._heads(_mm(x, attn.q_proj), attn, attn.num_heads)
        k = self._heads(_mm(x, attn.k_proj), attn, attn.num_key_value_heads)
        v = self._heads(_mm(x, attn.v_proj), attn, attn.num_key_value_heads)
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
        k, v = torch.cat([past_k, k], dim=2), torch.cat([past_v, v], dim=2)
        h = h + _mm(_attention(q, k, v, bias, attn.scaling), attn.o_proj)
        h = h + _mlp(layer.mlp, layer.post_attention_layernorm(h))
        return h, k, v

    def _cross_layer(self, layer, h, k, v, bias, row):
        attn = layer.cross_attn
        q = attn.q_norm(self._heads(_mm(layer.input_layernorm(h), attn.q_proj), attn, attn.num_heads))
        h = h + layer.cross_attn_attn_gate.tanh() * _mm(_attention(q, k, v, bias, attn.scaling), attn.o_proj)
        return h + layer.cross_attn_mlp_gate.tanh() * (row * _mlp(layer.mlp, layer.post_attention_layernorm(h)))


# -- optimum configs -------------------------------------------------------------------------------

class _TuplePatcher(ModelPatcher):
    """The wrappers return a flat tuple in ``config.outputs`` order and take past tensors as tuples;
    the default patcher would turn them into a DynamicCache, which these wrappers do not use."""

    def __init__(self, config, model, model_kwargs=None):
        super().__init__(config, model, model_kwargs)
        names = list(config.outputs)

        @functools.wraps(self.orig_forward)  # keeps the signature optimum orders the inputs by
        def patched_forward(*args, **kwargs):
            return dict(zip(names, self.orig_forward(*args, **kwargs)))

        self.patched_forward = patched_forward


class TupleOnnxConfig(OnnxConfig):
    """Base of the wrappers' configs (every architecture's): flat tuple outputs, no cache object."""

    NORMALIZED_CONFIG_CLASS = NormalizedConfig
    DEFAULT_ONNX_OPSET = 18
    _MODEL_PATCHER = _TuplePatcher

    def __init__(self, config, float_dtype: str = "fp32"):
        super().__init__(config, task="feature-extraction", float_dtype=float_dtype)

    @property
    def torch_dtype(self) -> torch.dtype:
        return torch.float16 if self.float_dtype == "fp16" else torch.float32

    @property
    def values_override(self):
        return None

    def patch_model_for_export(self, model, model_kwargs=None):
        return self._MODEL_PATCHER(self, model, model_kwargs=model_kwargs)


class _MllamaOnnxConfig(TupleOnnxConfig):
    def __init__(self, config, float_dtype: str = "fp32"):
        super().__init__(config, float_dtype=float_dtype)
        text = config.text_config
        self.self_ids, self.cross_ids = layer_ids(text)
        self.kv_heads = text.num_key_value_heads
        self.head_dim = text.hidden_size // text.num_attention_heads

    def _kv_axes(self, prefix: str, length_axis: str, batch_axis: str = "batch_size") -> dict[str, dict[int, str]]:
        ids = self.cross_ids if prefix == "cross_key_values" else self.self_ids
        return {f"{prefix}.{i}.{kind}": {0: batch_axis, 2: length_axis} for i in ids for kind in ("key", "value")}


class MllamaVisionOnnxConfig(_MllamaOnnxConfig):
    """vision.onnx: image → per-cross-layer keys/values."""

    @property
    def inputs(self):
        return {"pixel_values": {0: "image_batch", 2: "tiles"}, "aspect_ratio_ids": {0: "image_batch"},
                "aspect_ratio_mask": {0: "image_batch", 2: "tiles"}}

    @property
    def outputs(self):
        return self._kv_axes("cross_key_values", "vision_tokens", "image_batch")

    def generate_dummy_inputs(self, framework: str = "pt", image_batch: int = 2, **_):
        vision = self._config.vision_config
        tiles, size = vision.max_num_tiles, vision.image_size
        return {"pixel_values": torch.randn(image_batch, 1, tiles, vision.num_channels, size, size, dtype=self.torch_dtype),
                "aspect_ratio_ids": torch.ones(image_batch, 1, dtype=torch.long),
                "aspect_ratio_mask": torch.ones(image_batch, 1, tiles, dtype=torch.long)}


class MllamaDecoderOnnxConfig(_MllamaOnnxConfig):
    """decoder.onnx: one prefill or decode step with an explicit KV cache."""

    @property
    def inputs(self):
        return {"input_ids": {0: "batch_size", 1: "sequence_length"},
                "attention_mask": {0: "batch_size", 1: "total_length"},
                "position_ids": {0: "batch_size", 1: "sequence_length"},
                "cross_attention_mask": {0: "batch_size", 1: "sequence_length", 3: "tiles"},
                "logits_positions": {0: "logits_length"},
                **self._kv_axes("past_key_values", "past_length"),
                **self._kv_axes("cross_key_values", "vision_tokens")}

    @property
    def outputs(self):
        presents = {k.replace("past_key_values", "present"): v for k, v in self._kv_axes("past_key_values", "total_length").items()}
        return {"logits": {0: "batch_size", 1: "logits_length"}, **presents}

    def generate_dummy_inputs(self, framework: str = "pt", batch_size: int = 2, sequence_length: int = 3,
                              past_length: int = 4, tiles: int = 2, per_tile: int = 5, **_):
        def kv(length):
            return tuple(torch.randn(batch_size, self.kv_heads, length, self.head_dim, dtype=self.torch_dtype) for _ in range(2))

        total = past_length + sequence_length
        cross_mask = torch.ones(batch_size, sequence_length, 1, tiles, dtype=torch.long)
        cross_mask[0, 0] = 0  # exercise the "row sees no tile" branch while tracing
        return {"input_ids": torch.randint(0, 1000, (batch_size, sequence_length)),
                "attention_mask": torch.ones(batch_size, total, dtype=torch.long),
                "position_ids": torch.arange(past_length, total).expand(batch_size, -1).contiguous(),
                "cross_attention_mask": cross_mask,
                "logits_positions": torch.arange(sequence_length - 2, sequence_length),
                "past_key_values": tuple(kv(past_length) for _ in self.self_ids),
                "cross_key_values": tuple(kv(tiles * per_tile) for _ in self.cross_ids)}


SPEC = OnnxSpec(
    model_type="mllama",
    transformers_class="MllamaForConditionalGeneration",
    components={"vision": (MllamaVisionToCrossKV, MllamaVisionOnnxConfig),
                "decoder": (MllamaDecoderWithCache, MllamaDecoderOnnxConfig)},
    prepare=pretranspose_text_linears,
)

"""What the ``vision`` + ``embed`` + ``decoder`` ONNX exports share (LLaVA-OneVision, Qwen2.5-VL,
ShieldGemma 2, Llama 4): one contract, so one ONNX Runtime backend base (runtime/backends/onnx_common.py).

* ``embed``   — input_ids [B, S] → ``inputs_embeds`` [B, S, hidden]: :class:`TokenEmbed` (the model's
  own input embedding, scaled or not) with :class:`EmbedOnnxConfig`, as they are for every architecture.
* ``vision``  — :class:`ImagesOnnxConfig` for a flat batch of square images [n, channels, size, size]
  (tiles, anyres patches or whole images: a subclass names the axis and the outputs); the wrapper
  module is the architecture's own.
* ``decoder`` — :class:`DecoderWithCache` runs the architecture's ``_layer`` over explicit past
  tensors and returns fp32 logits at ``logits_positions`` only; :class:`DecoderOnnxConfig` declares
  inputs_embeds, attention_mask [B, past+S], position_ids [B, S], the architecture's
  ``EXTRA_INPUTS`` (e.g. token types), logits_positions [K], ``past_key_values.{l}.key/.value``
  [B, kv, past, hd] → ``logits`` [B, K, vocab] and ``present.{l}.key/.value`` [B, kv, past+S, hd],
  its dimensions read from ``config.text_config``.

An architecture's spec module (export/onnx_<model_type>.py) then holds only its own: the vision
wrapper, the decoder's layer and forward (masks, rotary), what ``prepare`` refuses or reshapes, and
its ``SPEC``.

    from guardedge.export.onnx_specs import spec_for   # guardedge export onnx picks a spec by model_type
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from guardedge.export.onnx_configs import TupleOnnxConfig, _mm


class TokenEmbed(nn.Module):
    """The token embedding table as a graph: Gather on ORT's device, no table copy on the host."""

    def __init__(self, model):
        super().__init__()
        self.config = model.config  # optimum's export_pytorch reads it
        self.embed_tokens = model.get_input_embeddings()  # Gemma 3's scales by sqrt(hidden) itself

    def forward(self, input_ids):
        return (self.embed_tokens(input_ids),)


class DecoderWithCache(nn.Module):
    """A text model + output layer with explicit past tensors; logits at ``logits_positions`` only.

    A subclass sets ``layers``, ``norm`` and ``lm_head`` (weights [in, out]: the spec's ``prepare``),
    and its ``forward`` (whose signature names the graph's inputs) builds what every layer needs and
    returns ``self.run_layers(...)``; ``_layer(layer, h, past_k, past_v, *layer_inputs)`` returns
    (h, k, v) with the past already prepended to k and v.
    """

    layers: nn.ModuleList
    norm: nn.Module
    lm_head: nn.Module

    def run_layers(self, h, logits_positions, past_key_values, *layer_inputs):
        presents = []
        for layer, (past_k, past_v) in zip(self.layers, past_key_values):
            h, k, v = self._layer(layer, h, past_k, past_v, *layer_inputs)
            presents += [k, v]
        logits = _mm(self.norm(h.index_select(1, logits_positions)), self.lm_head).float()
        return (logits, *presents)

    def _layer(self, layer, h, past_k, past_v, *layer_inputs):
        raise NotImplementedError

    @staticmethod
    def _heads(x, heads: int, head_dim: int):
        """[B, S, heads * head_dim] → [B, heads, S, head_dim]."""
        return x.reshape(x.shape[0], x.shape[1], heads, head_dim).transpose(1, 2)


# -- optimum configs -------------------------------------------------------------------------------

class ImagesOnnxConfig(TupleOnnxConfig):
    """vision.onnx on a flat batch of square images: pixel_values [n, channels, size, size] → ``OUTPUTS``,
    each [n, ...]; n is the dynamic axis ``AXIS``."""

    AXIS: ClassVar[str] = "images"
    OUTPUTS: ClassVar[tuple[str, ...]] = ("image_features",)
    DUMMY_COUNT: ClassVar[int] = 2

    @property
    def inputs(self):
        return {"pixel_values": {0: self.AXIS}}

    @property
    def outputs(self):
        return {name: {0: self.AXIS} for name in self.OUTPUTS}

    def generate_dummy_inputs(self, framework: str = "pt", **shapes):
        vision, n = self._config.vision_config, shapes.get(self.AXIS, self.DUMMY_COUNT)
        return {"pixel_values": torch.randn(n, vision.num_channels, vision.image_size, vision.image_size, dtype=self.torch_dtype)}


class EmbedOnnxConfig(TupleOnnxConfig):
    """embed.onnx: token ids → embeddings."""

    @property
    def inputs(self):
        return {"input_ids": {0: "batch_size", 1: "sequence_length"}}

    @property
    def outputs(self):
        return {"inputs_embeds": {0: "batch_size", 1: "sequence_length"}}

    def generate_dummy_inputs(self, framework: str = "pt", batch_size: int = 2, sequence_length: int = 3, **_):
        return {"input_ids": torch.randint(0, 1000, (batch_size, sequence_length))}


class DecoderOnnxConfig(TupleOnnxConfig):
    """decoder.onnx: one prefill or decode step with an explicit KV cache. A subclass adds its own inputs
    after position_ids (``EXTRA_INPUTS``, their dummies from :meth:`extra_dummy_inputs`)."""

    EXTRA_INPUTS: ClassVar[dict[str, dict[int, str]]] = {}
    DUMMY_SEQUENCE_LENGTH: ClassVar[int] = 3

    def __init__(self, config, float_dtype: str = "fp32"):
        super().__init__(config, float_dtype=float_dtype)
        text = config.text_config
        self.layers, self.hidden, self.kv_heads = text.num_hidden_layers, text.hidden_size, text.num_key_value_heads
        self.head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads

    def _past_axes(self, prefix: str, length_axis: str) -> dict[str, dict[int, str]]:
        return {f"{prefix}.{i}.{kind}": {0: "batch_size", 2: length_axis} for i in range(self.layers) for kind in ("key", "value")}

    @property
    def inputs(self):
        return {"inputs_embeds": {0: "batch_size", 1: "sequence_length"},
                "attention_mask": {0: "batch_size", 1: "total_length"},
                "position_ids": {0: "batch_size", 1: "sequence_length"},
                **self.EXTRA_INPUTS,
                "logits_positions": {0: "logits_length"},
                **self._past_axes("past_key_values", "past_length")}

    @property
    def outputs(self):
        return {"logits": {0: "batch_size", 1: "logits_length"}, **self._past_axes("present", "total_length")}

    def extra_dummy_inputs(self, batch_size: int, sequence_length: int) -> dict[str, torch.Tensor]:
        return {}

    def generate_dummy_inputs(self, framework: str = "pt", batch_size: int = 2, sequence_length: int | None = None,
                              past_length: int = 4, **_):
        def kv():
            return tuple(torch.randn(batch_size, self.kv_heads, past_length, self.head_dim, dtype=self.torch_dtype) for _ in range(2))

        sequence_length = sequence_length or self.DUMMY_SEQUENCE_LENGTH
        total = past_length + sequence_length
        return {"inputs_embeds": torch.randn(batch_size, sequence_length, self.hidden, dtype=self.torch_dtype),
                "attention_mask": torch.ones(batch_size, total, dtype=torch.long),
                "position_ids": torch.arange(past_length, total).expand(batch_size, -1).contiguous(),
                **self.extra_dummy_inputs(batch_size, sequence_length),
                "logits_positions": torch.arange(sequence_length - 2, sequence_length),
                "past_key_values": tuple(kv() for _ in range(self.layers))}

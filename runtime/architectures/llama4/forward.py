"""Llama 4's PyTorch forward for the backend: image merge, masks, and per-row attention temperature.

``Llama4ForConditionalGeneration`` has no ``.model`` trunk: it merges the projected image features
into the token embeddings in its own top-level forward and hands ``inputs_embeds`` to
``language_model`` (a ``Llama4ForCausalLM``). :func:`trunk` is that merge followed by the text
model, returning its ``last_hidden_state``; the head is ``language_model.lm_head``.

Masks: the text model takes one mask per attention type (``full_attention``, ``chunked_attention``).
Given a 2-D mask it builds them itself, and the chunked one raises when the config's
``attention_chunk_size`` is null — which is what the real Llama Guard 4 checkpoint says
(PurpleLlama #119). :func:`masks` always hands it the mapping: with no chunk size both types are
the plain causal/padding mask (chunking is off, as the checkpoint says); with one, the chunked
layers also see only keys of their query's chunk, counted on each row's own positions (what
transformers' ``chunked_causal_mask_function`` computes from the left padding).

Attention temperature (``attn_temperature_tuning``, NoPE layers): transformers scales those
layers' queries by ``1 + attn_scale * log1p(floor((cache_position + 1) / floor_scale))``, and
``cache_position`` is a batch's *column*, not a row's own position; a left-padded row would then get
another scale than alone once a batch is wider than ``floor_scale - 1`` (8191 for Llama 4).
:class:`RowTemperature` applies the scale from each row's own position instead, only for batches
where the two differ (below that width the scale is exactly 1 either way).
"""

from __future__ import annotations

import contextlib
from typing import Callable

import torch

from guardedge.runtime.architectures.masks import additive, allowed


def trunk(model, image_token_id: int) -> Callable:
    """The callable the backend runs: images merged as the model's forward does, then the text model."""
    text = model.language_model.model
    strategy = model.config.vision_config.vision_feature_select_strategy
    temperature = RowTemperature(text)

    def run(input_ids, attention_mask, position_ids, past_key_values=None, use_cache=True, cache_position=None,
            pixel_values=None):
        embeds = text.embed_tokens(input_ids)
        if pixel_values is not None:
            features = model.get_image_features(pixel_values=pixel_values, vision_feature_select_strategy=strategy)
            projected = model.multi_modal_projector(features.view(-1, features.size(-1))).to(embeds.device, embeds.dtype)
            where = (input_ids == image_token_id).unsqueeze(-1).expand_as(embeds)
            if int(where.sum()) != projected.numel():
                raise ValueError(f"{int(where.sum()) // embeds.shape[-1]} image tokens for {projected.shape[0]} image features")
            embeds = embeds.masked_scatter(where, projected)
        if cache_position is None:
            past = past_key_values.get_seq_length() if past_key_values is not None else 0
            cache_position = torch.arange(past, past + input_ids.shape[1], device=input_ids.device)
        with temperature(position_ids, cache_position):
            return text(inputs_embeds=embeds, attention_mask=attention_mask, position_ids=position_ids,
                        past_key_values=past_key_values, use_cache=use_cache, cache_position=cache_position)

    return run


def masks(attn: torch.Tensor, first: int, dtype: torch.dtype, chunk: int | None, implementation: str,
          hide: torch.Tensor | None = None) -> dict:
    """The text model's mask mapping for a pass feeding columns ``first``.. of the 2-D mask ``attn``;
    ``hide`` [width, columns] (bool) marks query/key pairs hidden on top of that (branches fed side
    by side: runtime/backends/torch_backend.py).

    An unpadded prefill under sdpa gets no mask (sdpa's own causal path, as transformers does);
    everything else an additive [rows, 1, width, columns] mask."""
    if (first == 0 and hide is None and implementation == "sdpa" and bool(attn.all())
            and (chunk is None or attn.shape[1] <= chunk)):
        return {"full_attention": None, "chunked_attention": None}
    sees = allowed(attn, first)
    if hide is not None:
        sees = sees & ~hide[None, None]
    full = additive(sees, dtype)
    if chunk is None:
        return {"full_attention": full, "chunked_attention": full}
    position = (attn.long().cumsum(-1) - 1).clamp(min=0)  # each kept column's own position
    block = position // chunk
    same = block[:, None, first:, None] == block[:, None, None, :]
    return {"full_attention": full, "chunked_attention": additive(sees & same, dtype)}


class RowTemperature:
    """Applies the NoPE layers' attention temperature from each row's own positions (see module doc)."""

    def __init__(self, text_model):
        config = text_model.config
        self.on = bool(getattr(config, "attn_temperature_tuning", False))
        self.floor, self.scale = float(config.floor_scale), float(config.attn_scale)
        self.layers = [layer.self_attn for layer in text_model.layers if not layer.self_attn.use_rope] if self.on else []

    def scales(self, positions: torch.Tensor) -> torch.Tensor:
        """float32 scales for integer positions (transformers' formula)."""
        return torch.log1p(torch.floor((positions.float() + 1.0) / self.floor)) * self.scale + 1.0

    @contextlib.contextmanager
    def __call__(self, position_ids: torch.Tensor, cache_position: torch.Tensor):
        rows = self.scales(position_ids)  # [B, L]
        if not self.layers or torch.equal(rows, self.scales(cache_position)[None].expand_as(rows)):
            yield  # transformers' own scaling already is each row's
            return
        hooks = []
        for attn in self.layers:
            attn.attn_temperature_tuning = False
            # A NoPE layer's queries are q_proj's output as is (no rotary, no qk-norm): scaled there.
            hooks.append(attn.q_proj.register_forward_hook(lambda _m, _i, out: (out * rows[..., None]).to(out.dtype)))
        try:
            yield
        finally:
            for attn, hook in zip(self.layers, hooks):
                hook.remove()
                attn.attn_temperature_tuning = True

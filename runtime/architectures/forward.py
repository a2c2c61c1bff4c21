"""Defaults for the PyTorch forward hooks of an architecture plug-in (runtime/architectures/base.py).

Most transformers vision-language models share one layout: ``model.model`` runs the text trunk
with the images merged (or cross-attended) and returns ``last_hidden_state``; ``model.lm_head`` is
the output layer; positions are the 1-D ones of the left-padded batch and masks are plain causal.
An architecture inherits :class:`TorchForward` and overrides what differs — Llama 4 has no
``.model``, ShieldGemma 2 nests Gemma 3 one level deeper, Gemma 3 attends both ways inside an
image, Qwen2.5-VL's rotary positions are 3-D — so the backend never names a model attribute.
"""

from __future__ import annotations

from typing import Callable, ClassVar

import torch

from guardedge.runtime.architectures.base import Batch
from guardedge.runtime.architectures.masks import prefill_mask, step_mask


class TorchForward:
    """transformers' usual layout: ``model.model`` (trunk) and ``model.lm_head`` (head)."""

    # Whether a prompt's leading text (before its first image) may take its KV cache from an
    # earlier prompt (runtime/backends/prefix_cache.py): true only where that text's keys and values
    # depend on nothing after it and positions continue by one per token.
    prefix_reuse: ClassVar[bool] = False
    # Whether torch_mask takes ``hide`` (query/key pairs hidden on top of the causal mask), so the
    # backend may feed branch tokens side by side after the prefill's draft.
    branch_drafts: ClassVar[bool] = False

    def torch_trunk(self, model) -> Callable:
        return model.model

    def torch_head(self, model) -> torch.nn.Module:
        return model.lm_head

    def torch_mask(self, attention_mask: torch.Tensor, first: int, dtype: torch.dtype, context: dict) -> object:
        if first == 0:
            return prefill_mask(attention_mask, dtype)
        return step_mask(attention_mask, first, dtype)

    def torch_positions(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        return batch.position_ids, batch.position_ids

    def torch_step_positions(self, positions: torch.Tensor) -> torch.Tensor:
        return positions

    def torch_step(self, context: dict, width: int) -> tuple[dict, dict]:
        return {}, context  # decode steps are text only

    def torch_select(self, context: dict, index: torch.Tensor) -> dict:
        return context

    def torch_vision_encoder(self, model) -> torch.nn.Module:
        return model.model.vision_tower

    def torch_text_model(self, model) -> torch.nn.Module:
        return model.model.language_model

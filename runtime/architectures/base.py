"""What every architecture plug-in provides, and the batch shape all of them share.

A batch is left-padded with explicit position ids from the attention mask, so each row gives
the numbers it would give alone. Architectures add their own image inputs to it (``Batch.extra``)
and say how those follow the tokens appended at prefill (drafts) and during decoding.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, ClassVar, Literal, Protocol, Sequence, TypeVar

import torch


@dataclass
class Encoded:
    """One prompt's model inputs: its ids (each image placeholder expanded as the model expects)
    and the architecture's encoded images, in prompt order (none for a text-only prompt)."""

    input_ids: list[int]
    images: list = field(default_factory=list)  # the architecture's encoded images
    image_positions: list[int] = field(default_factory=list)  # index of each image's first token in input_ids
    image_tokens: int = 0  # prompt tokens the images cost in all
    image_lengths: list[int] = field(default_factory=list)  # prompt tokens each image's span takes

    @property
    def image(self) -> Any:
        """The first image or None (architectures that take one image per prompt read this); its
        type is the architecture's own encoded image."""
        return self.images[0] if self.images else None

    @property
    def image_pos(self) -> int:
        return self.image_positions[0] if self.image_positions else -1


T = TypeVar("T")


def present(value: T | None) -> T:
    """``value``, which an invariant of the caller says is set (e.g. an image's compact pixels
    exist only when the architecture knows its pixel configuration), narrowed for the type checker."""
    if value is None:
        raise AssertionError("a value the invariant says is set is None")
    return value


@dataclass
class Batch:
    """A left-padded batch. ``extra`` holds the architecture's image inputs (tensors or None)."""

    input_ids: torch.Tensor  # [B, L]
    attention_mask: torch.Tensor  # [B, L]
    position_ids: torch.Tensor  # [B, L]
    image_rows: list[int]
    extra: dict = field(default_factory=dict)

    def extended(self, tokens: Sequence[int], extend_extra=None) -> Batch:
        """The batch with ``tokens`` appended to every row; ``extend_extra(extra, k)`` follows suit."""
        if not tokens:
            return self
        n, k = self.input_ids.shape[0], len(tokens)
        steps = torch.arange(1, k + 1)
        return replace(
            self,
            input_ids=torch.cat([self.input_ids, torch.tensor([list(tokens)] * n, dtype=self.input_ids.dtype)], dim=1),
            attention_mask=torch.cat([self.attention_mask, self.attention_mask.new_ones((n, k))], dim=1),
            position_ids=torch.cat([self.position_ids, self.position_ids[:, -1:] + steps], dim=1),
            extra=extend_extra(self.extra, k) if extend_extra else self.extra,
        )


def left_pad(items: Sequence[Encoded], pad_id: int, pad_left: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[int]]:
    """input_ids, attention_mask, position_ids and each row's start column."""
    length = max(len(e.input_ids) for e in items)
    n = len(items)
    input_ids = torch.full((n, length), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((n, length), dtype=torch.long)
    starts = []
    for i, e in enumerate(items):
        start = length - len(e.input_ids) if pad_left else 0
        input_ids[i, start : start + len(e.input_ids)] = torch.tensor(e.input_ids)
        attention_mask[i, start : start + len(e.input_ids)] = 1
        starts.append(start)
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    return input_ids, attention_mask, position_ids, starts


def expand_placeholders(ids: list[int], token_id: int, counts: Sequence[int],
                        spans: Sequence[Sequence[int]] | None = None) -> tuple[list[int], list[int]]:
    """``ids`` with the i-th ``token_id`` placeholder replaced by ``spans[i]`` (default: ``token_id``
    repeated ``counts[i]`` times, what LLaVA-style processors write); each span's first index.

    Raises ValueError when the prompt holds a different number of placeholders than images: the
    family renders one placeholder per image, so a mismatch is a bug, not bad input.
    """
    found = [i for i, t in enumerate(ids) if t == token_id]
    if len(found) != len(counts):
        raise ValueError(f"the prompt has {len(found)} image placeholders for {len(counts)} images")
    out: list[int] = []
    starts: list[int] = []
    last = 0
    for j, (pos, count) in enumerate(zip(found, counts)):
        out += ids[last:pos]
        starts.append(len(out))
        out += list(spans[j]) if spans is not None else [token_id] * count
        last = pos + 1
    return out + ids[last:], starts


GroupKind = Literal["attention", "mlp", "cross_attention", "vision", "projector", "head"]


@dataclass(frozen=True)
class ModuleGroup:
    """A part of the model that quantization treats as one unit: ``guardedge export sensitivity``
    quantizes one group at a time, ``--keep auto`` keeps whole groups in 16-bit.

    ``modules``: full module names in the transformers model (what ``--skip-modules`` takes; a
    name covers everything under it). ``onnx``: ``"component:pattern"`` entries naming the same
    weights in the ONNX export: a MatMul whose weight initializer or node name contains
    ``pattern`` in ``<component>.onnx`` (e.g. ``"decoder:layers.3.mlp."``)."""

    name: str  # e.g. "text.3.attention", "vision", "head"
    kind: GroupKind
    modules: tuple[str, ...]
    onnx: tuple[str, ...] = ()


class Architecture(Protocol):
    """One model architecture (one instance per loaded model directory).

    Requests -> tensors (encode_image, image_tokens, expand, collate, extend_extra) and the PyTorch
    forward passes (the ``torch_*`` hooks; runtime/architectures/forward.py has defaults for
    transformers' usual layout). The backends name no model attribute: whatever is specific to the
    model's module tree, masks and positions is answered here.
    """

    model_type: ClassVar[str]
    transformers_class: ClassVar[str]  # the transformers class that loads the directory
    keep_16bit: ClassVar[tuple[str, ...]]  # module names a bitsandbytes recipe keeps in 16-bit by default
    int8_keep: ClassVar[tuple[str, ...]]  # modules bitsandbytes 8-bit cannot run (kept 16-bit whatever the recipe)
    verdict_head: ClassVar[str]  # the module whose rows turn the last hidden state into the verdict's logits
    onnx_backend: ClassVar[str]  # "module:Class" of its ONNX Runtime backend ("" if none yet)
    prefix_reuse: ClassVar[bool]  # leading text may reuse a kept KV cache (runtime/backends/prefix_cache.py)
    branch_drafts: ClassVar[bool]  # torch_mask takes ``hide``: branch tokens may follow the prefill's draft

    @classmethod
    def quant_groups(cls, config: dict) -> tuple[ModuleGroup, ...]:
        """The module groups of a model with this config.json, in model order: per text layer its
        attention (or cross-attention) and MLP, then the vision tower, the projector, the head."""
        ...

    @classmethod
    def real_configs(cls) -> dict:
        """name -> transformers config of the published checkpoints this architecture serves (weights
        not needed): the memory a recipe's kept groups cost is computed for these too. Empty when
        none has been checked against a real checkpoint yet."""
        ...

    def __init__(self, path: Path | None, config: dict, tokenizer, image_token: str, image_processor=None):
        """``image_processor`` (already loaded) replaces loading the directory's own."""
        ...

    def context_length(self) -> int:
        """Tokens the text model accepts."""
        ...

    def encode_image(self, image) -> object:
        """A decoded RGB PIL image -> this architecture's encoded image (compact until collate)."""
        ...

    def image_tokens(self, encoded_image) -> int:
        """Prompt tokens the image costs once its placeholder is expanded."""
        ...

    def image_tokens_for(self, width: int, height: int) -> int:
        """The same cost from the image's size alone (its header, EXIF orientation applied), before
        any pixel is decoded: the context check runs on it, so a prompt too long for the model is
        refused without decoding its image. Must equal ``image_tokens(encode_image(image))``."""
        ...

    def expand(self, ids: list[int], encoded_images: Sequence) -> tuple[list[int], list[int]]:
        """Prompt ids with each image placeholder expanded (in order); each image's first token index."""
        ...

    def collate(self, items: Sequence[Encoded], pad_left: bool = True) -> Batch: ...

    def extend_extra(self, extra: dict, k: int) -> dict:
        """``extra`` after ``k`` tokens are appended to every row (they see what the last one saw)."""
        ...

    # -- PyTorch forward passes (defaults: runtime/architectures/forward.py) ------------------------
    def torch_trunk(self, model) -> Callable:
        """The callable that runs the text trunk (images merged or cross-attended) and returns an
        output with ``last_hidden_state``; it takes input_ids, attention_mask, position_ids,
        past_key_values, use_cache, cache_position and the image inputs of ``torch_prefill``."""
        ...

    def torch_head(self, model) -> torch.nn.Module:
        """The output layer (hidden states -> logits over the vocabulary)."""
        ...

    def torch_vision(self, model, batch: Batch, device: torch.device, dtype: torch.dtype) -> torch.Tensor | None:
        """The image features alone (vision encoder + projector): the benches' "vision" stage."""
        ...

    def torch_prefill(self, model, batch: Batch, device: torch.device, dtype: torch.dtype) -> tuple[dict, dict]:
        """Keyword inputs of the trunk at prefill beyond ids, masks, positions and cache, and the
        context decode steps need (e.g. Mllama's cross-attention mask)."""
        ...

    def torch_step(self, context: dict, width: int) -> tuple[dict, dict]:
        """Inputs of one decode step of ``width`` tokens, and the context for the next step."""
        ...

    def torch_select(self, context: dict, index: torch.Tensor) -> dict:
        """The decode context of the rows in ``index``."""
        ...

    def torch_mask(self, attention_mask: torch.Tensor, first: int, dtype: torch.dtype, context: dict) -> object:
        """The mask the trunk gets for a pass feeding columns ``first``.. of the 2-D ``attention_mask``
        (kept columns 1): a tensor, or what the model accepts (Gemma 3: a mask per attention type)."""
        ...

    def torch_positions(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """The prefill's position ids as the trunk takes them, and each column's text position [B, L]
        (the next token's position follows the last one's)."""
        ...

    def torch_step_positions(self, positions: torch.Tensor) -> torch.Tensor:
        """A decode step's position ids as the trunk takes them, from text positions [B, W]."""
        ...

    def torch_vision_encoder(self, model) -> torch.nn.Module:
        """The vision encoder module (fast paths switch its attention or compile it)."""
        ...

    def torch_text_model(self, model) -> torch.nn.Module:
        """The text model whose forward a decode step calls (fast paths compile it)."""
        ...

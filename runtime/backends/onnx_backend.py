"""ONNX Runtime backend for Mllama: the exported ``vision`` and ``decoder`` components (export/onnx_configs.py).

Same behaviour as the PyTorch backend: one prefill per batch, a KV-cached greedy decode for the
rows the engine asks for, mixed batches with and without images. The vision component runs only
on the image rows and returns each cross-attention layer's keys/values once per request; rows
without an image get zero keys/values and a zero cross-attention mask (the cross layers then add
nothing, as in PyTorch). A batch without any image feeds one zero vision token per row. Exports
with a ``logits_positions`` input decode with format drafts like the PyTorch backend (the
prefill carries the first draft); older exports decode one token per step.

The decoder's cache, the decode steps and CUDA IO binding are shared with the other
architectures (onnx_common.py); on CUDA the image keys/values are uploaded once per decode.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from guardedge.runtime.architectures import Batch
from guardedge.runtime.backends.onnx_common import (NP_FLOAT, OnnxDecoderBackend, OnnxState, OnnxSteps, open_sessions,
                                                    weight_bytes)

_OnnxSteps = OnnxSteps  # the decode steps' class, as tests and callers named it before the split


class OnnxBackend(OnnxDecoderBackend):
    def __init__(self, vision, decoder, precision: str, device: str, weight_bytes: int, arch=None):
        super().__init__(decoder, precision, device, weight_bytes, arch)
        self.vision = vision
        inputs = {i.name: i for i in decoder.get_inputs()}
        self.cross_names = [n for n in inputs if n.startswith("cross_key_values.")]
        first = inputs[self.cross_names[0]]
        self.kv_heads, self.head_dim = first.shape[1], first.shape[3]
        self.float = NP_FLOAT[first.type]

    @classmethod
    def load(cls, model_dir, device: str | None = None, dtype: str | None = None, arch=None) -> OnnxBackend:
        sessions, dev = open_sessions(model_dir, ("vision", "decoder"), device, dtype)
        return cls(sessions["vision"], sessions["decoder"], model_dir.manifest["precision"], dev, weight_bytes(model_dir), arch)

    # -- prefill / decode ---------------------------------------------------------------------------

    def _cross_kv(self, batch: Batch) -> dict[str, np.ndarray]:
        n = batch.input_ids.shape[0]
        if not batch.image_rows:
            return {name: np.zeros((n, self.kv_heads, 1, self.head_dim), self.float) for name in self.cross_names}
        out = self.vision.run(None, {
            "pixel_values": batch.extra["pixel_values"].numpy().astype(self.float),
            "aspect_ratio_ids": batch.extra["aspect_ratio_ids"].numpy(),
            "aspect_ratio_mask": batch.extra["aspect_ratio_mask"].numpy()})
        full = {}
        for name, value in zip((o.name for o in self.vision.get_outputs()), out):
            full[name] = np.zeros((n, *value.shape[1:]), value.dtype)
            full[name][batch.image_rows] = value
        return full

    def prefill(self, batch: Batch, draft: Sequence[int] = ()):
        """Logits at the last prompt position and the cache; ``draft`` is fed after every prompt in
        the same run (runtime/decoding.py) when this export can return logits at its positions."""
        import torch

        draft = tuple(draft) if self.multi_position else ()
        prompt_columns = batch.input_ids.shape[1]
        batch = batch.extended(draft, self.arch.extend_extra if self.arch else None)
        n, length = batch.input_ids.shape
        cross = self._cross_kv(batch)
        cross_mask = batch.extra["cross_attention_mask"].numpy() if batch.extra["cross_attention_mask"] is not None \
            else np.zeros((n, length, 1, 1), np.int64)
        empty = np.zeros((n, self.kv_heads, 0, self.head_dim), self.float)
        feeds = {"input_ids": batch.input_ids.numpy(), "attention_mask": batch.attention_mask.numpy(),
                 "position_ids": batch.position_ids.numpy(), "cross_attention_mask": cross_mask,
                 **{name: empty for name in self.past_names}, **cross}
        logits, past = self.run_decoder(feeds, np.arange(prompt_columns - 1, length))  # the verdict's position, then the draft's
        # New tokens see the tiles the last prompt token saw: its mask row is reused at every step.
        state = OnnxState(past, feeds["attention_mask"], batch.position_ids[:, prompt_columns - 1].numpy() + 1,
                          prompt_columns, draft, logits[:, 1:], {"cross_last": cross_mask[:, -1:], **cross})
        return torch.from_numpy(np.ascontiguousarray(logits[:, 0])), state

    def select_extra(self, extra: dict, rows: list[int]) -> dict:
        # The image keys/values are uploaded once per decode, not once per step.
        return {k: v[rows] if k == "cross_last" else self.on_device(v[rows]) for k, v in extra.items()}

    def token_feeds(self, ids: np.ndarray, extra: dict) -> dict:
        cross = {k: v for k, v in extra.items() if k != "cross_last"}
        return {"input_ids": ids, "cross_attention_mask": np.repeat(extra["cross_last"], ids.shape[1], axis=1), **cross}

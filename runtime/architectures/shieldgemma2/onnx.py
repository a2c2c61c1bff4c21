"""ONNX Runtime backend for ShieldGemma 2 (Gemma 3): ``vision``, ``embed`` and ``decoder`` components
(export/onnx_shieldgemma2.py says their inputs and outputs).

Prefill, per batch: the vision component runs once on the batch's images; the embed component turns
the ids into embeddings and the host writes each image's features over its soft tokens' rows (as
``masked_scatter`` does); the decoder runs with an empty cache and ``token_type_ids`` marking the
soft tokens (its graph opens the image block of the mask for them). Policy suffixes (shared-prefix
scoring, onnx_common.prefill_shared) and decode steps are text: embed + decoder, types 0.

    engine = load_engine("/models/shieldgemma2-onnx")   # manifest: architecture shieldgemma2
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from guardedge.runtime.architectures import Batch
from guardedge.runtime.backends.onnx_common import NP_FLOAT, OnnxDecoderBackend, OnnxState, open_sessions, weight_bytes


class OnnxShieldGemma2Backend(OnnxDecoderBackend):
    def __init__(self, vision, embed, decoder, precision: str, device: str, weight_bytes: int, arch=None):
        super().__init__(decoder, precision, device, weight_bytes, arch)
        self.vision, self.embed = vision, embed
        first = {i.name: i for i in decoder.get_inputs()}[self.past_names[0]]
        self.kv_heads, self.head_dim = first.shape[1], first.shape[3]
        self.float = NP_FLOAT[first.type]
        self.vision_float = NP_FLOAT[vision.get_inputs()[0].type]

    @classmethod
    def load(cls, model_dir, device: str | None = None, dtype: str | None = None, arch=None) -> OnnxShieldGemma2Backend:
        sessions, dev = open_sessions(model_dir, ("vision", "embed", "decoder"), device, dtype)
        return cls(sessions["vision"], sessions["embed"], sessions["decoder"], model_dir.manifest["precision"], dev,
                   weight_bytes(model_dir), arch)

    def prefill(self, batch: Batch, draft: Sequence[int] = ()):
        """Logits at the last prompt position and the cache; ``draft`` is fed after every prompt."""
        import torch

        draft = tuple(draft) if self.multi_position else ()
        prompt_columns = batch.input_ids.shape[1]
        batch = batch.extended(draft, self.arch.extend_extra if self.arch else None)
        n, length = batch.input_ids.shape
        ids = batch.input_ids.numpy()
        embeds = self._embed(ids)
        if batch.image_rows:
            self._write_images(embeds, ids, batch)
        empty = np.zeros((n, self.kv_heads, 0, self.head_dim), self.float)
        feeds = {"inputs_embeds": embeds, "attention_mask": batch.attention_mask.numpy(),
                 "position_ids": batch.position_ids.numpy(), "token_type_ids": batch.extra["token_type_ids"].numpy(),
                 **{name: empty for name in self.past_names}}
        logits, past = self.run_decoder(feeds, np.arange(prompt_columns - 1, length))
        state = OnnxState(past, feeds["attention_mask"], batch.position_ids[:, prompt_columns - 1].numpy() + 1,
                          prompt_columns, draft, logits[:, 1:])
        return torch.from_numpy(np.ascontiguousarray(logits[:, 0])), state

    def token_feeds(self, ids: np.ndarray, extra: dict) -> dict:
        return {"inputs_embeds": self._embed(ids), "token_type_ids": np.zeros_like(ids, dtype=np.int64)}

    def _embed(self, ids: np.ndarray) -> np.ndarray:
        return self.embed.run(["inputs_embeds"], {"input_ids": ids})[0]

    def _write_images(self, embeds: np.ndarray, ids: np.ndarray, batch: Batch) -> None:
        pixels = batch.extra["pixel_values"].numpy().astype(self.vision_float)
        features = self.vision.run(["image_features"], {"pixel_values": pixels})[0]
        soft = self.arch.soft_id
        for row, image in zip(batch.image_rows, features):
            where = np.flatnonzero(ids[row] == soft)
            if len(where) != len(image):
                raise RuntimeError(f"row {row}: {len(where)} soft tokens but {len(image)} image features; "
                                   "the artifact's processor and model disagree")
            embeds[row, where] = image.astype(embeds.dtype)

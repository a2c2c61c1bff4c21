"""ONNX Runtime backend for Llama 4 (Llama Guard 4): ``vision``, ``embed`` and ``decoder`` components
(export/onnx_llama4.py says their inputs and outputs).

Prefill, per batch: the vision component runs once on every tile of the batch's images (the
collated ``pixel_values``, tiles in prompt order, cast from bfloat16 to the export's float); the
embed component turns the ids into embeddings and the host writes the tile features over the
``<|patch|>`` rows in order (as ``masked_scatter`` does); the decoder runs with an empty cache.
Decode steps are text only: embed + decoder, through the shared drafted loop (onnx_common.py).

    engine = load_engine("/models/llama-guard-4-onnx")   # manifest: architecture llama4
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from guardedge.runtime.architectures import Batch
from guardedge.runtime.backends.onnx_common import NP_FLOAT, OnnxDecoderBackend, OnnxState, open_sessions, weight_bytes


class OnnxLlama4Backend(OnnxDecoderBackend):
    def __init__(self, vision, embed, decoder, precision: str, device: str, weight_bytes: int, arch=None):
        super().__init__(decoder, precision, device, weight_bytes, arch)
        self.vision, self.embed = vision, embed
        first = {i.name: i for i in decoder.get_inputs()}[self.past_names[0]]
        self.kv_heads, self.head_dim = first.shape[1], first.shape[3]
        self.float = NP_FLOAT[first.type]
        self.vision_float = NP_FLOAT[vision.get_inputs()[0].type]

    @classmethod
    def load(cls, model_dir, device: str | None = None, dtype: str | None = None, arch=None) -> OnnxLlama4Backend:
        sessions, dev = open_sessions(model_dir, ("vision", "embed", "decoder"), device, dtype)
        return cls(sessions["vision"], sessions["embed"], sessions["decoder"], model_dir.manifest["precision"], dev,
                   weight_bytes(model_dir), arch)

    def prefill(self, batch: Batch, draft: Sequence[int] = ()):
        """Logits at the last prompt position and the cache; ``draft`` is fed after every prompt in
        the same run (runtime/decoding.py)."""
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
                 "position_ids": batch.position_ids.numpy(), **{name: empty for name in self.past_names}}
        logits, past = self.run_decoder(feeds, np.arange(prompt_columns - 1, length))  # the verdict's position, then the draft's
        state = OnnxState(past, feeds["attention_mask"], batch.position_ids[:, prompt_columns - 1].numpy() + 1,
                          prompt_columns, draft, logits[:, 1:])
        return torch.from_numpy(np.ascontiguousarray(logits[:, 0])), state

    def token_feeds(self, ids: np.ndarray, extra: dict) -> dict:
        return {"inputs_embeds": self._embed(ids)}

    def _embed(self, ids: np.ndarray) -> np.ndarray:
        return self.embed.run(["inputs_embeds"], {"input_ids": ids})[0]

    def image_features(self, batch: Batch) -> np.ndarray:
        """[all tiles x tokens, hidden]: vision.onnx on every tile, flattened in prompt order."""
        pixels = batch.extra["pixel_values"].float().numpy().astype(self.vision_float)
        features = self.vision.run(["image_features"], {"pixel_values": pixels})[0]
        return features.reshape(-1, features.shape[-1])

    def _write_images(self, embeds: np.ndarray, ids: np.ndarray, batch: Batch) -> None:
        where = ids == self.arch.feature_token_id
        features = self.image_features(batch)
        if int(where.sum()) != len(features):
            raise RuntimeError(f"{int(where.sum())} image tokens but {len(features)} image features; "
                               "the artifact's processor and model disagree")
        embeds[where] = features.astype(embeds.dtype)  # row-major: the order masked_scatter fills

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

import numpy as np

from guardedge.runtime.architectures import Batch
from guardedge.runtime.backends.onnx_common import OnnxEmbedDecoderBackend


class OnnxShieldGemma2Backend(OnnxEmbedDecoderBackend):
    def prefill_feeds(self, batch: Batch) -> dict:
        return {"token_type_ids": batch.extra["token_type_ids"].numpy()}  # opens the image block of the mask

    def token_feeds(self, ids: np.ndarray, extra: dict) -> dict:
        return {"inputs_embeds": self._embed(ids), "token_type_ids": np.zeros_like(ids, dtype=np.int64)}

    def _write_images(self, embeds: np.ndarray, ids: np.ndarray, batch: Batch) -> None:
        pixels = batch.extra["pixel_values"].numpy().astype(self.vision_float)
        features = self.vision.run(["image_features"], {"pixel_values": pixels})[0]
        self._write_rows(embeds, ids, batch.image_rows, self.arch.soft_id, features, "soft tokens")

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

import numpy as np

from guardedge.runtime.architectures import Batch
from guardedge.runtime.backends.onnx_common import OnnxEmbedDecoderBackend


class OnnxLlama4Backend(OnnxEmbedDecoderBackend):
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

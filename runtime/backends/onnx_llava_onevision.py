"""ONNX Runtime backend for LLaVA-OneVision (LlavaGuard v1.2): ``vision``, ``embed`` and ``decoder``
components (export/onnx_llava_onevision.py says their inputs and outputs).

Prefill, per batch: the vision component runs once on every real anyres patch of the batch's
images (each image's count comes from its size, as transformers' ``get_image_features`` reads
it; the collated batch pads to the most patches); the host packs each image's features with
transformers' own ``pack_image_features`` (unpad, the anyres_max_9 shrink, a newline per row,
the base view first: data-dependent geometry, kept out of the graph, see the export spec); the
embed component turns the ids into embeddings and the host writes the image features over the
image tokens' rows (as ``masked_scatter`` does); the decoder runs with an empty cache. Decode
steps are text only: embed + decoder, through the shared drafted loop. All but the images is
onnx_common.OnnxEmbedDecoderBackend's.

    engine = load_engine("/models/llavaguard-onnx")   # manifest: architecture llava_onevision
"""

from __future__ import annotations

import numpy as np

from guardedge.runtime.architectures import Batch
from guardedge.runtime.backends.onnx_common import OnnxEmbedDecoderBackend


class OnnxLlavaOneVisionBackend(OnnxEmbedDecoderBackend):
    def __init__(self, vision, embed, decoder, precision: str, device: str, weight_bytes: int, arch=None, *, config):
        super().__init__(vision, embed, decoder, precision, device, weight_bytes, arch)
        self.packer = _Packer(config)

    @classmethod
    def init_kwargs(cls, model_dir) -> dict:
        from transformers import AutoConfig

        return {"config": AutoConfig.from_pretrained(str(model_dir.path), local_files_only=True)}

    def _write_images(self, embeds: np.ndarray, ids: np.ndarray, batch: Batch) -> None:
        """Each image row's packed features over its image tokens, in order (as masked_scatter)."""
        self._write_rows(embeds, ids, batch.image_rows, self.arch.image_token_id, self.image_features(batch))

    def image_features(self, batch: Batch) -> list[np.ndarray]:
        """[tokens_i, hidden] per image of the batch: vision.onnx on the real patches, packed on the host."""
        pixel_values, sizes = batch.extra["pixel_values"], batch.extra["image_sizes"]
        counts = [self.packer.patches(size) for size in sizes.tolist()]
        patches = np.concatenate([pixel_values[j, :c].numpy() for j, c in enumerate(counts)]).astype(self.vision_float)
        features, newline = self.vision.run(["image_features", "image_newline"], {"pixel_values": patches})
        per_image = np.split(features, np.cumsum(counts)[:-1])
        return self.packer.pack(per_image, sizes, newline[0])


class _Packer:
    """transformers' anyres packing on a stand-in model: only its ``config`` is read.

    Running ``LlavaOnevisionModel.pack_image_features`` itself (not a copy) keeps the geometry —
    grid shape, unpadding, bilinear shrink, newlines — the model's by construction.
    """

    def __init__(self, config):
        from transformers.models.llava_onevision import modeling_llava_onevision as modeling

        self.config = config
        self._modeling = modeling

    def patches(self, image_size: list[int]) -> int:
        """Patches the processor made for an image of this (height, width): base + anyres tiles."""
        return self._modeling.image_size_to_num_patches(image_size, self.config.image_grid_pinpoints,
                                                        self.config.vision_config.image_size)

    def pack(self, per_image: list[np.ndarray], sizes, newline: np.ndarray) -> list[np.ndarray]:
        import torch

        with torch.inference_mode():
            # float32 on the host whatever the export's float: CPU bilinear resize in half precision is not what PyTorch runs.
            packed, _ = self._modeling.LlavaOnevisionModel.pack_image_features(
                self,  # type: ignore[arg-type]  # a stand-in self (see the class docstring)
                [torch.from_numpy(f.astype(np.float32)) for f in per_image], sizes,
                image_newline=torch.from_numpy(newline.astype(np.float32)),
                vision_aspect_ratio=self.config.vision_aspect_ratio)
        return [p.numpy() for p in packed]

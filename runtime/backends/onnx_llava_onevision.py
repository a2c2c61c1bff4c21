"""ONNX Runtime backend for LLaVA-OneVision (LlavaGuard v1.2): ``vision``, ``embed`` and ``decoder``
components (export/onnx_llava_onevision.py says their inputs and outputs).

Prefill, per batch: the vision component runs once on every real anyres patch of the batch's
images (each image's count comes from its size, as transformers' ``get_image_features`` reads
it; the collated batch pads to the most patches); the host packs each image's features with
transformers' own ``pack_image_features`` (unpad, the anyres_max_9 shrink, a newline per row,
the base view first: data-dependent geometry, kept out of the graph, see the export spec); the
embed component turns the ids into embeddings and the host writes the image features over the
image tokens' rows (as ``masked_scatter`` does); the decoder runs with an empty cache. Decode
steps are text only: embed + decoder, through the shared drafted loop (onnx_common.py).

    engine = load_engine("/models/llavaguard-onnx")   # manifest: architecture llava_onevision
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from guardedge.runtime.architectures import Batch
from guardedge.runtime.backends.onnx_common import NP_FLOAT, OnnxDecoderBackend, OnnxState, open_sessions, weight_bytes


class OnnxLlavaOneVisionBackend(OnnxDecoderBackend):
    def __init__(self, vision, embed, decoder, config, precision: str, device: str, weight_bytes: int, arch=None):
        super().__init__(decoder, precision, device, weight_bytes, arch)
        self.vision, self.embed = vision, embed
        self.packer = _Packer(config)
        first = {i.name: i for i in decoder.get_inputs()}[self.past_names[0]]
        self.kv_heads, self.head_dim = first.shape[1], first.shape[3]
        self.float = NP_FLOAT[first.type]
        self.vision_float = NP_FLOAT[vision.get_inputs()[0].type]

    @classmethod
    def load(cls, model_dir, device: str | None = None, dtype: str | None = None, arch=None) -> OnnxLlavaOneVisionBackend:
        from transformers import AutoConfig

        sessions, dev = open_sessions(model_dir, ("vision", "embed", "decoder"), device, dtype)
        config = AutoConfig.from_pretrained(str(model_dir.path), local_files_only=True)
        return cls(sessions["vision"], sessions["embed"], sessions["decoder"], config, model_dir.manifest["precision"],
                   dev, weight_bytes(model_dir), arch)

    # -- prefill ------------------------------------------------------------------------------------

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

    def _write_images(self, embeds: np.ndarray, ids: np.ndarray, batch: Batch) -> None:
        """Each image row's packed features over its image tokens, in order (as masked_scatter)."""
        token = self.arch.image_token_id
        for row, features in zip(batch.image_rows, self.image_features(batch)):
            where = np.flatnonzero(ids[row] == token)
            if len(where) != len(features):
                raise RuntimeError(f"row {row}: {len(where)} image tokens but {len(features)} image features; "
                                     "the artifact's processor and model disagree")
            embeds[row, where] = features.astype(embeds.dtype)

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

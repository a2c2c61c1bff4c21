"""ONNX Runtime backend for Qwen2.5-VL (QwenGuard v1.2): ``vision``, ``embed`` and ``decoder`` components
(export/onnx_qwen2_5_vl.py says their inputs and outputs).

Prefill, per batch: the host lays out every image patch of the batch in the vision tower's window
order and computes each patch's (row, column) and its window and image — :class:`VisionGeometry`,
by the tower's own ``get_window_index`` and ``rot_pos_emb`` on a stand-in that holds only the
vision config (data-dependent geometry the TorchScript exporter would freeze as constants of the
dummy image) — then vision.onnx runs once on all of them and the host puts the merged features
back in image order; embed.onnx turns the ids into embeddings and the host writes the features
over the image tokens' rows (as ``masked_scatter`` does); the decoder runs with an empty cache.
Positions: the decoder takes the text positions ``position_ids`` [B, S] (the temporal axis of the
3-D positions) and ``mrope_deltas`` [2, B, S] (height and width minus it: zero for text), so decode
steps, which are text only, feed zeros and the shared decode loop (onnx_common.py) stays 1-D. The
rest of the prefill is onnx_common.OnnxEmbedDecoderBackend's.

    engine = load_engine("/models/qwenguard-onnx")   # manifest: architecture qwen2_5_vl
"""

from __future__ import annotations

import numpy as np

from guardedge.runtime.architectures import Batch
from guardedge.runtime.backends.onnx_common import OnnxEmbedDecoderBackend


class OnnxQwen25VLBackend(OnnxEmbedDecoderBackend):
    def __init__(self, vision, embed, decoder, precision: str, device: str, weight_bytes: int, arch=None, *,
                 vision_config: dict):
        super().__init__(vision, embed, decoder, precision, device, weight_bytes, arch)
        self.geometry = VisionGeometry(vision_config)

    @classmethod
    def init_kwargs(cls, model_dir) -> dict:
        return {"vision_config": model_dir.config["vision_config"]}

    def prefill_feeds(self, batch: Batch) -> dict:
        """The 3-D positions as the text positions (their temporal axis) and height/width minus them."""
        rope = batch.extra["rope_positions"].numpy()
        return {"position_ids": rope[0], "mrope_deltas": rope[1:] - rope[0]}

    def token_feeds(self, ids: np.ndarray, extra: dict) -> dict:
        """Appended tokens are text: their three position axes agree (deltas 0)."""
        return {"inputs_embeds": self._embed(ids), "mrope_deltas": np.zeros((2, *ids.shape), np.int64)}

    def _write_images(self, embeds: np.ndarray, ids: np.ndarray, batch: Batch) -> None:
        """The merged features over the image tokens, row by row in order (as masked_scatter)."""
        features = self.image_features(batch)
        token, start = self.arch.image_token_id, 0
        for row in batch.image_rows:
            where = np.flatnonzero(ids[row] == token)
            if start + len(where) > len(features):
                raise RuntimeError(f"row {row}: {len(where)} image tokens but only {len(features) - start} image "
                                   "features left; the artifact's processor and model disagree")
            embeds[row, where] = features[start : start + len(where)].astype(embeds.dtype)
            start += len(where)

    def image_features(self, batch: Batch) -> np.ndarray:
        """[image tokens of the batch, hidden]: vision.onnx on every patch in window order, back in image order."""
        layout = self.geometry(batch.extra["image_grid_thw"])
        pixel_values = batch.extra["pixel_values"].numpy()[layout["patch_order"]].astype(self.vision_float)
        feeds = {"pixel_values": pixel_values, **{k: layout[k] for k in ("position_hw", "window_segments", "image_segments")}}
        (features,) = self.vision.run(["image_features"], feeds)
        return features[layout["reverse"]]


class VisionGeometry:
    """Where Qwen2.5-VL's vision tower puts each patch, computed on the host with the tower's own code.

    ``get_window_index`` (the window order of the 2 x 2 merge units and the window boundaries) and
    ``rot_pos_emb`` (each patch's row and column; with an identity table in place of the rotary
    frequencies it returns the positions themselves) read only the attributes set here, so they run
    on this stand-in without the model and the layout cannot drift from transformers'.
    """

    def __init__(self, vision_config: dict):
        import torch

        self.window_size = vision_config.get("window_size", 112)
        self.spatial_merge_size = vision_config.get("spatial_merge_size", 2)
        self.patch_size = vision_config.get("patch_size", 14)
        self.spatial_merge_unit = self.spatial_merge_size ** 2
        self.rotary_pos_emb = lambda n: torch.arange(n, dtype=torch.float32)[:, None]  # position -> itself

    def __call__(self, grid_thw) -> dict[str, np.ndarray]:
        """patch_order [N] (window order), position_hw [N, 2], window_segments [N], image_segments [N]
        (int64, in window order), reverse [N / unit] (merged tokens back to image order)."""
        import torch
        from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VisionTransformerPretrainedModel as Tower

        grid_thw = torch.as_tensor(grid_thw, dtype=torch.long)
        unit = self.spatial_merge_unit
        window_index, cu_windows = Tower.get_window_index(self, grid_thw)  # type: ignore[arg-type]  # a stand-in self (see the class docstring)
        patch_order = (window_index[:, None] * unit + torch.arange(unit)).reshape(-1)
        position_hw = Tower.rot_pos_emb(self, grid_thw)[patch_order].long()  # type: ignore[arg-type]  # a stand-in self (see the class docstring)
        cu_images = torch.repeat_interleave(grid_thw[:, 1] * grid_thw[:, 2], grid_thw[:, 0]).cumsum(0)
        n = patch_order.shape[0]
        return {"patch_order": patch_order.numpy(), "position_hw": position_hw.numpy(),
                "window_segments": _segments(torch.tensor(cu_windows), n), "image_segments": _segments(cu_images, n),
                "reverse": torch.argsort(window_index).numpy()}


def _segments(boundaries, n: int) -> np.ndarray:
    """Each of ``n`` positions' segment number, from cumulative segment ends (a leading 0 and repeats ignored)."""
    import torch

    ends = torch.unique_consecutive(torch.as_tensor(boundaries, dtype=torch.long))
    ends = ends[ends > 0]
    return torch.searchsorted(ends, torch.arange(n), right=True).numpy().astype(np.int64)

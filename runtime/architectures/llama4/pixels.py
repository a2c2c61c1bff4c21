"""Llama 4 image preprocessing without torchvision: exactly what ``Llama4ImageProcessorFast`` makes.

transformers 4.57 has only a torchvision-based Llama 4 image processor, and torchvision cannot be
installed beside the project's torch; this module reproduces it bit for bit with PIL/numpy/torch:

1. the canvas: the grid of ``tile``-px tiles (at most ``max_patches``) that fits the image with the
   least upscaling, else the least downscaling, ties to the smallest area (``get_best_fit``);
2. the image resized into it without distortion — never upsampled unless smaller than a tile —
   with torch's antialiased bilinear ``interpolate`` on uint8, the kernel torchvision's ``resize``
   calls for uint8 images on CPU; then zero-padded to the canvas (right and bottom);
3. when the grid has more than one tile, a global tile: the whole image resized to one tile;
4. ``(uint8 -> bfloat16) * rescale_factor``, then ``(x - mean) / std`` in bfloat16 (the processor's
   own override, "as in the original implementation"); tiles row by row, the global tile last.

The reference it is checked against (tests/test_llama4_pixels.py, fixtures made by
tests/llama4_pixel_reference.py): Llama4ImageProcessorFast of transformers 4.57.1 on torch 2.14.1 +
torchvision 0.29.1 (CPU), 32 image sizes from 1x1 to 5000x3000, two configurations — equal bit for
bit. A request keeps :class:`CompactImage` (the resized uint8 image, a few MB at most) until
collate writes the bfloat16 tiles; step 4 is a 256-entry table built with the same torch ops.

    from guardedge.runtime.architectures.llama4 import pixels
    cfg = pixels.TileConfig(); pixels.grid(1920, 1080, cfg)   # (3, 5): 15 tiles + a global one
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

# What the real checkpoint's preprocessor_config.json says (Llama4ImageProcessorFast defaults too).
SUPPORTED = {"resample": 2, "do_resize": True, "do_rescale": True, "do_normalize": True, "resize_to_max_canvas": False}


@dataclass(frozen=True)
class TileConfig:
    tile: int = 336  # size.height == size.width
    max_patches: int = 16
    rescale_factor: float = 1 / 255
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)


@dataclass
class CompactImage:
    """One image as the processor sees it, before normalisation: uint8 [3, h, w] resized (not yet
    padded), the tile grid, and the uint8 [3, tile, tile] global view (None for a single tile)."""

    resized: torch.Tensor
    rows: int
    cols: int
    global_view: torch.Tensor | None

    @property
    def num_tiles(self) -> int:
        """Tiles the vision encoder sees: the grid, plus the global view when there is more than one."""
        n = self.rows * self.cols
        return n + 1 if n > 1 else n


def config_from_json(preprocessor: dict) -> TileConfig:
    """The tile configuration of a ``preprocessor_config.json``; ValueError naming what is unsupported."""
    size = preprocessor.get("size") or {"height": 336, "width": 336}
    if size.get("height") != size.get("width"):
        raise ValueError(f"tiles must be square, the processor's size is {size}")
    for key, value in SUPPORTED.items():
        if preprocessor.get(key, value) != value:
            raise ValueError(f"{key}={preprocessor[key]!r} is not supported (only {value!r}, what Llama 4 checkpoints use)")
    return TileConfig(tile=int(size["height"]), max_patches=int(preprocessor.get("max_patches", 16)),
                      rescale_factor=float(preprocessor.get("rescale_factor", 1 / 255)),
                      mean=tuple(preprocessor.get("image_mean", (0.5, 0.5, 0.5))),
                      std=tuple(preprocessor.get("image_std", (0.5, 0.5, 0.5))))


@lru_cache(maxsize=8)
def canvases(max_patches: int, tile: int) -> tuple[tuple[int, int], ...]:
    """Every (height, width) grid canvas of at most ``max_patches`` tiles, in the processor's order."""
    by_ratio: dict[float, list[tuple[int, int]]] = {}
    for chunks in range(max_patches, 0, -1):
        for h in sorted(f for f in range(1, chunks + 1) if chunks % f == 0):
            by_ratio.setdefault(h / (chunks // h), []).append((h, chunks // h))
    return tuple((h * tile, w * tile) for sizes in by_ratio.values() for h, w in sizes)


@lru_cache(maxsize=4096)  # asked twice per image (its token cost, then its pixels); sizes repeat
def best_canvas(height: int, width: int, cfg: TileConfig) -> tuple[int, int]:
    """(height, width) of the canvas ``get_best_fit`` picks (float32 scales, as it computes them)."""
    options = torch.tensor(canvases(cfg.max_patches, cfg.tile))
    scales_h = options[:, 0] / height
    scales_w = options[:, 1] / width
    scales = torch.where(scales_h > scales_w, scales_w, scales_h)
    up = scales[scales >= 1]
    chosen = up.min() if len(up) else scales[scales < 1].max()
    picked = options[scales == chosen]
    return tuple(picked[torch.argmin(picked[:, 0] * picked[:, 1])].tolist()) if len(picked) > 1 else tuple(picked[0].tolist())


def resized_size(height: int, width: int, canvas: tuple[int, int], cfg: TileConfig) -> tuple[int, int]:
    """The size the image is resized to inside ``canvas``: no distortion, no upscaling past a tile."""
    target_h = min(max(height, cfg.tile), canvas[0])
    target_w = min(max(width, cfg.tile), canvas[1])
    scale_h, scale_w = target_h / height, target_w / width
    if scale_w < scale_h:
        new_h, new_w = min(math.floor(height * scale_w), target_h), target_w
    else:
        new_h, new_w = target_h, min(math.floor(width * scale_h), target_w)
    return max(new_h, 1), max(new_w, 1)


def grid(width: int, height: int, cfg: TileConfig) -> tuple[int, int]:
    """(rows, cols) of tiles for an image of this size."""
    canvas = best_canvas(height, width, cfg)
    return canvas[0] // cfg.tile, canvas[1] // cfg.tile


def _resize(pixels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """uint8 [3, h, w] -> uint8 [3, H, W]: torchvision's uint8 CPU resize (antialiased bilinear interpolate)."""
    if tuple(pixels.shape[-2:]) == tuple(size):
        return pixels  # torchvision returns the image itself when the size does not change
    out = torch.nn.functional.interpolate(pixels[None], size=list(size), mode="bilinear", align_corners=False, antialias=True)
    return out[0]


def compact(image, cfg: TileConfig) -> CompactImage:
    """A decoded RGB PIL image -> its :class:`CompactImage` (what a queued request holds)."""
    array = np.array(image.convert("RGB") if image.mode != "RGB" else image)  # a writable copy torch can own
    # HWC viewed as CHW (channels-last memory), as torchvision's pil_to_tensor hands it to resize.
    pixels = torch.from_numpy(array).permute(2, 0, 1)
    height, width = array.shape[:2]
    canvas = best_canvas(height, width, cfg)
    rows, cols = canvas[0] // cfg.tile, canvas[1] // cfg.tile
    resized = _resize(pixels, resized_size(height, width, canvas, cfg)).contiguous()
    view = _resize(pixels, (cfg.tile, cfg.tile)).contiguous() if rows * cols > 1 else None
    return CompactImage(resized, rows, cols, view)


@lru_cache(maxsize=8)
def _table(cfg: TileConfig) -> torch.Tensor:
    """bfloat16 [3, 256]: each uint8 value through the processor's rescale and normalise, same torch ops."""
    values = torch.arange(256, dtype=torch.uint8).expand(3, 256)[:, :, None].to(torch.bfloat16) * cfg.rescale_factor
    mean = torch.tensor(cfg.mean, dtype=torch.bfloat16).view(-1, 1, 1)
    std = torch.tensor(cfg.std, dtype=torch.bfloat16).view(-1, 1, 1)
    return values.sub_(mean).div_(std)[:, :, 0].contiguous()


def _normalise(pixels: torch.Tensor, cfg: TileConfig) -> torch.Tensor:
    """uint8 [3, H, W] -> bfloat16 [3, H, W] through the table (a gather per channel)."""
    table = _table(cfg)
    flat = pixels.reshape(3, -1).long()
    return torch.gather(table, 1, flat).reshape(pixels.shape)


def tiles(image: CompactImage, cfg: TileConfig) -> torch.Tensor:
    """bfloat16 [num_tiles, 3, tile, tile]: the padded canvas's tiles row by row, then the global view."""
    t = cfg.tile
    canvas = torch.zeros((3, image.rows * t, image.cols * t), dtype=torch.uint8)
    canvas[:, : image.resized.shape[1], : image.resized.shape[2]] = image.resized
    grid_ = _normalise(canvas, cfg).reshape(3, image.rows, t, image.cols, t).permute(1, 3, 0, 2, 4)
    out = grid_.reshape(image.rows * image.cols, 3, t, t)
    if image.global_view is not None:
        out = torch.cat([out, _normalise(image.global_view, cfg)[None]])
    return out


def pixel_values(images: list[CompactImage], cfg: TileConfig) -> torch.Tensor:
    """bfloat16 [all tiles, 3, tile, tile] for a batch's images, in order (the processor's layout)."""
    return torch.cat([tiles(im, cfg) for im in images])

"""Mllama image tiles, fast and exact: the numbers transformers' MllamaImageProcessor gives, from compact pixels.

What the model card's processor (``MllamaImageProcessor``, the slow one) does to an RGB image,
read from transformers 4.57: choose a tile grid, resize the uint8 image with PIL (bilinear, no
reducing gap), pad bottom/right with uint8 0, rescale in float64 and cast to float32, normalize
in float32 ``(x - mean) / std``, split into tiles, zero-fill the unused tiles. Along the way it
converts PIL → numpy → channels-first → PIL → numpy and makes a float64 copy of the whole canvas.

Here that is two steps:

- ``compact(image, config)`` — at request time: one PIL resize, kept as the uint8 HWC array
  (``CompactImage``, new_h x new_w x 3 bytes; 2.1 MB for a 1920x1080 photo, against 15 MB for
  the float32 [4, 3, 560, 560] tiles), plus the grid and aspect-ratio id.
- ``write_tiles(compact, config, out)`` — at collate time: one pass that tiles, transposes,
  rescales, normalizes and pads straight into a preallocated [max_tiles, 3, T, T] buffer.

Exactness: the pixels after the resize are the same uint8 values (same PIL call), and a uint8
takes only 256 values, so the float math is a per-channel table of 256 entries computed with
transformers' own operations (``table``). The pass applies it arithmetically in float32 when that
reproduces the table for all 256 inputs (checked once per config), else by lookup; either way the
output equals the processor's bit for bit (tests/test_pixels.py). A model in bf16/fp16 gets the
table cast once, the same as casting the float32 tensor afterwards.

Run ``guardedge bench preprocess`` for timings against transformers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Protocol

import numpy as np
import torch


class PixelMath(Protocol):
    """What the float math (rescale, normalize) reads of any architecture's pixel configuration
    (TileConfig here; those of pixels_onevision and the ShieldGemma 2 / Qwen2.5-VL pixel modules)."""

    @property
    def scale(self) -> float | None: ...
    @property
    def mean(self) -> tuple[float, float, float] | None: ...
    @property
    def std(self) -> tuple[float, float, float] | None: ...
    @property
    def table(self) -> np.ndarray: ...
    def __hash__(self) -> int: ...  # _channels caches per configuration


@dataclass(frozen=True)
class TileConfig:
    """The parts of an MllamaImageProcessor configuration that decide its output."""

    tile: int
    max_tiles: int
    resample: int  # a PIL resampling filter
    scale: float | None  # rescale factor; None when do_rescale is off
    mean: tuple[float, float, float] | None  # None when do_normalize is off
    std: tuple[float, float, float] | None
    table: np.ndarray = field(init=False, repr=False, compare=False)  # float32 [3, 256]

    def __post_init__(self) -> None:
        object.__setattr__(self, "table", _table(self.scale, self.mean, self.std))

    @property
    def pad_values(self) -> np.ndarray:
        """What a padded pixel becomes: the processor pads with uint8 0 before rescaling."""
        return self.table[:, 0]


def config_from_processor(processor) -> tuple[TileConfig | None, str]:
    """The processor's ``TileConfig``, or None and why the fast path cannot reproduce it."""
    if type(processor).__name__ != "MllamaImageProcessor":
        return None, f"{type(processor).__name__} is not MllamaImageProcessor"
    size = processor.size
    if size.get("height") != size.get("width"):
        return None, f"tiles are not square ({size})"
    if not processor.do_convert_rgb:
        return None, "do_convert_rgb is off"
    math, why = pixel_math(processor)
    if math is None:
        return None, why
    return TileConfig(int(size["height"]), int(processor.max_image_tiles), int(processor.resample), *math), ""


def pixel_math(processor) -> tuple[tuple[float | None, tuple | None, tuple | None] | None, str]:
    """A processor's (rescale factor, mean, std), each None when that step is off; or None and why."""
    scale = float(processor.rescale_factor) if processor.do_rescale else None
    mean = std = None
    if processor.do_normalize:
        mean, std = _three(processor.image_mean), _three(processor.image_std)
        if mean is None or std is None:
            return None, "image_mean/image_std do not have 3 channels"
    return (scale, mean, std), ""


def _three(values) -> tuple[float, float, float] | None:
    values = list(values) if isinstance(values, (list, tuple)) else [values] * 3
    if len(values) != 3:
        return None
    a, b, c = (float(v) for v in values)
    return a, b, c


def _table(scale: float | None, mean, std) -> np.ndarray:
    """The processor's float output for each uint8 value, by its own operations in its order."""
    x: np.ndarray = np.broadcast_to(np.arange(256, dtype=np.uint8), (3, 256))
    # transformers' rescale: float64 multiply, then cast to float32; without it, normalize casts to float32.
    x = (x.astype(np.float64) * scale).astype(np.float32) if scale is not None else x.astype(np.float32)
    if mean is not None:
        # transformers' normalize: mean and std as float32 arrays, (x - mean) / std in float32.
        x = (x - np.array(mean, np.float32)[:, None]) / np.array(std, np.float32)[:, None]
    return np.ascontiguousarray(x, dtype=np.float32)


# ---- grid --------------------------------------------------------------------------------------


def aspect_ratios(max_tiles: int) -> list[tuple[int, int]]:
    """The grids (rows, cols) in the processor's order; a grid's aspect_ratio_id is its index + 1."""
    return [(a, b) for a in range(1, max_tiles + 1) for b in range(1, max_tiles + 1) if a * b <= max_tiles]


@lru_cache(maxsize=1024)
def plan(height: int, width: int, tile: int, max_tiles: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """((rows, cols), (new_h, new_w)) for an image: the canvas needing the least upscaling, else the
    least downscaling, ties to the smallest area; then the aspect-preserving size inside it."""
    best: tuple[tuple, tuple[int, int]] | None = None
    for rows, cols in aspect_ratios(max_tiles):
        s = min((rows * tile) / height, (cols * tile) / width)  # float64, as numpy divides
        key = (0, s, rows * cols) if s >= 1 else (1, -s, rows * cols)  # first match wins ties, as argmin
        if best is None or key < best[0]:
            best = (key, (rows, cols))
    assert best is not None, f"max_tiles {max_tiles} allows no grid"  # any max_tiles >= 1 has the 1 x 1 grid
    rows, cols = best[1]
    return (rows, cols), _fit(height, width, rows * tile, cols * tile, tile)


def _fit(height: int, width: int, canvas_h: int, canvas_w: int, tile: int) -> tuple[int, int]:
    target_w = min(max(width, tile), canvas_w)
    target_h = min(max(height, tile), canvas_h)
    scale_h, scale_w = target_h / height, target_w / width
    if scale_w < scale_h:
        return min(math.floor(height * scale_w) or 1, target_h), target_w
    return target_h, min(math.floor(width * scale_h) or 1, target_w)


# ---- compact form and the fused pass -----------------------------------------------------------


@dataclass(frozen=True)
class CompactImage:
    """A resized image as uint8 HWC, before padding and tiling: what a queued request holds."""

    pixels: np.ndarray  # uint8 [new_h, new_w, 3]
    grid: tuple[int, int]  # (rows, cols) of tiles
    aspect_ratio_id: int
    num_tiles: int

    @property
    def nbytes(self) -> int:
        return int(self.pixels.nbytes)


def compact(image, config: TileConfig) -> CompactImage:
    """Resize an RGB PIL image (as runtime/images.py decodes it) for the model; one PIL call."""
    if image.mode != "RGB":
        image = image.convert("RGB")  # the processor's convert_rgb; decoded requests are RGB already
    grid, (new_h, new_w) = plan(image.height, image.width, config.tile, config.max_tiles)
    # The same call transformers makes (reducing_gap None), on the same uint8 pixels: same output.
    resized = image.resize((new_w, new_h), resample=config.resample, reducing_gap=None)
    ratio_id = aspect_ratios(config.max_tiles).index(grid) + 1
    return CompactImage(np.array(resized), grid, ratio_id, grid[0] * grid[1])


def aspect_ratio_mask(num_tiles: int, max_tiles: int) -> torch.Tensor:
    """1 for the image's tiles (and always the first), 0 for the padding tiles; int64 [max_tiles]."""
    mask = torch.zeros(max_tiles, dtype=torch.long)
    mask[: max(num_tiles, 1)] = 1
    return mask


def pixel_values(images: list[CompactImage], config: TileConfig, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The batch's ``pixel_values`` [n, 1, max_tiles, 3, T, T] in ``dtype``, written in one pass."""
    t = config.tile
    out = torch.empty((len(images), 1, config.max_tiles, 3, t, t), dtype=dtype)
    for i, image in enumerate(images):
        write_tiles(image, config, out[i, 0])
    return out


def write_tiles(image: CompactImage, config: TileConfig, out: torch.Tensor) -> None:
    """Tile, transpose, rescale, normalize and pad ``image`` into ``out`` [max_tiles, 3, T, T].

    Every element of ``out`` is written (unused tiles are 0, as transformers packs them), so it
    may come from ``torch.empty``.
    """
    write_canvas(torch.from_numpy(image.pixels), image.grid, config, out)


def write_canvas(src: torch.Tensor, grid: tuple[int, int], config: TileConfig, out: torch.Tensor) -> None:
    """``write_tiles`` for a resized uint8 [h, w, 3] tensor on any device (``out``'s).

    Non-float32 outputs go through a float32 tile, which is what casting the processor's float32
    output gives.
    """
    t, (rows, cols) = config.tile, grid
    f32 = out.dtype == torch.float32
    scratch = None if f32 else torch.empty((3, t, t), dtype=torch.float32, device=out.device)
    for r in range(rows):
        for c in range(cols):
            k = r * cols + c
            # scratch is None exactly when out is float32
            _tile(src[r * t : (r + 1) * t, c * t : (c + 1) * t], config, out[k] if scratch is None else scratch)
            if scratch is not None:
                out[k].copy_(scratch)
    out[rows * cols :].zero_()


def _tile(src: torch.Tensor, config: TileConfig, dst: torch.Tensor) -> None:
    """One tile: ``src`` uint8 [h, w, 3] (h, w <= T) into ``dst`` float32 [3, T, T], padded."""
    h, w = src.shape[0], src.shape[1]
    pad = _pad_column(config).to(dst.device)
    if h < dst.shape[1]:
        dst[:, h:, :].copy_(pad.expand(3, dst.shape[1] - h, dst.shape[2]))
    if w < dst.shape[2]:
        dst[:, :h, w:].copy_(pad.expand(3, h, dst.shape[2] - w))
    if h == 0 or w == 0:
        return
    region = dst[:, :h, :w]
    rescale = _exact_rescale(config)
    if rescale is not None:
        region.copy_(src.permute(2, 0, 1))  # uint8 -> float32 is exact
        _affine_(region, config, rescale)
    elif dst.device.type == "cpu":
        table, idx, view = config.table, src.numpy(), region.numpy()
        for ch in range(3):
            np.take(table[ch], idx[:, :, ch], out=view[ch], mode="clip")
    else:
        lookup = torch.from_numpy(config.table).to(dst.device)
        for ch in range(3):
            region[ch] = lookup[ch][src[:, :, ch].long()]


def _affine_(x: torch.Tensor, config: PixelMath, rescale: tuple[str, float]) -> torch.Tensor:
    """The processor's float math on float32 values of uint8 pixels, in place, in its order."""
    op, value = rescale
    if config.scale is not None:
        x.div_(value) if op == "div" else x.mul_(value)
    if config.mean is not None:
        _, mean, std = _channels(config)
        x.sub_(mean.to(x.device)).div_(std.to(x.device))
    return x


@lru_cache(maxsize=64)
def _channels(config: PixelMath) -> tuple[None, torch.Tensor, torch.Tensor]:
    mean = torch.tensor(np.array(config.mean or (0.0,) * 3, np.float32)).view(3, 1, 1)
    std = torch.tensor(np.array(config.std or (1.0,) * 3, np.float32)).view(3, 1, 1)
    return None, mean, std


@lru_cache(maxsize=64)
def _pad_column(config: TileConfig) -> torch.Tensor:
    return torch.from_numpy(config.pad_values.copy()).view(3, 1, 1)


@lru_cache(maxsize=64)
def _exact_rescale(config: PixelMath) -> tuple[str, float] | None:
    """A float32 rescale step with which the arithmetic equals the table for all 256 values, if any.

    The processor multiplies in float64 by 1/255 and casts: a float32 multiply by 1/255 differs
    from that in 126 of 256 values, a float32 divide by 255 in none (both checked here, not
    assumed). None: the pass looks the values up in the table instead.
    """
    scale = config.scale if config.scale is not None else 1.0
    candidates = [("div", float(np.float32(round(1 / scale)))), ("mul", float(np.float32(scale)))]
    for rescale in candidates:
        x = torch.arange(256, dtype=torch.float32).expand(3, 1, 256).clone()
        if torch.equal(_affine_(x, config, rescale).view(3, 256), torch.from_numpy(config.table)):
            return rescale
    return None

"""Qwen2.5-VL image patches, fast and exact: what Qwen2VLImageProcessor gives, from compact pixels.

What the model card's processor (``Qwen2VLImageProcessor``, the slow one, PIL/numpy) does to an
RGB image, read from transformers 4.57: ``smart_resize`` the size to multiples of
``patch_size * merge_size`` (28) with a pixel count between ``min_pixels`` and ``max_pixels``;
resize the uint8 image with PIL to it (bicubic, no reducing gap; also when the size is already
right, which returns a copy); rescale in float64 and cast to float32; normalize in float32; repeat
the frame ``temporal_patch_size`` (2) times; cut 14 x 14 patches ordered by 2 x 2 merge block
(block row, block column, then the four patches of the block) with each patch's values ordered
(channel, frame, y, x): ``pixel_values`` [grid_h * grid_w, 3 * 2 * 14 * 14] and ``image_grid_thw``
[1, grid_h, grid_w]. The prompt holds grid_h * grid_w / 4 image tokens for it.

Here that is two steps, as runtime/pixels.py does for Mllama:

- ``compact(image, config)`` — at request time: the one PIL resize, kept as uint8 HWC
  (``CompactGrid``; 6.3 MB for a 1920x1080 photo at the real configuration, against 50.6 MB of
  float32 patches: the frame is stored twice and as 4-byte floats);
- ``write_patches(compact, config, out)`` — at collate time: one pass that rescales, normalizes,
  and lays the patches out (frame repeat included) straight into the [patches, 1176] buffer.

Exactness: the same PIL call on the same uint8 pixels gives the same uint8 pixels, and the float
math on a uint8 is a per-channel table of 256 entries (runtime/pixels.py's argument and code),
so the output equals the processor's bit for bit (tests/test_qwen2_5_vl_pixels.py). As for
LLaVA-OneVision, every image is read as the RGB image it is (transformers guesses the channel axis
and misreads an image 1 or 3 pixels high; the reference is the processor told
``input_data_format="channels_last"``).

    python -m guardedge.bench.preprocess_qwen2_5_vl   # timings and bytes against transformers
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from guardedge.runtime import pixels
from guardedge.runtime.errors import invalid

MAX_ASPECT = 200  # smart_resize refuses a longer side over 200 times the shorter


@dataclass(frozen=True)
class GridConfig:
    """The parts of a Qwen2VLImageProcessor configuration that decide its output."""

    patch: int  # patch_size (14)
    merge: int  # merge_size (2): merge x merge patches become one prompt token
    temporal: int  # temporal_patch_size (2): the frame is repeated this many times
    min_pixels: int
    max_pixels: int
    resample: int  # a PIL resampling filter
    scale: float | None  # rescale factor; None when do_rescale is off
    mean: tuple[float, float, float] | None  # None when do_normalize is off
    std: tuple[float, float, float] | None
    table: np.ndarray = field(init=False, repr=False, compare=False)  # float32 [3, 256]

    def __post_init__(self) -> None:
        object.__setattr__(self, "table", pixels._table(self.scale, self.mean, self.std))

    @property
    def factor(self) -> int:
        return self.patch * self.merge

    @property
    def features(self) -> int:
        """Values per patch row of ``pixel_values``: channels x frames x patch x patch."""
        return 3 * self.temporal * self.patch * self.patch


def config_from_processor(processor) -> tuple[GridConfig | None, str]:
    """The processor's ``GridConfig``, or None and why the fast path cannot reproduce it."""
    if type(processor).__name__ != "Qwen2VLImageProcessor":
        return None, f"{type(processor).__name__} is not Qwen2VLImageProcessor"
    if not (processor.do_convert_rgb and processor.do_resize):
        return None, "do_convert_rgb or do_resize is off"
    math_, why = pixels.pixel_math(processor)
    if math_ is None:
        return None, why
    # preprocess() resizes by size["shortest_edge"/"longest_edge"], which __init__ keeps equal to min/max_pixels.
    size = processor.size
    return GridConfig(int(processor.patch_size), int(processor.merge_size), int(processor.temporal_patch_size),
                      int(size["shortest_edge"]), int(size["longest_edge"]), int(processor.resample), *math_), ""


def check_aspect(height: int, width: int) -> None:
    """smart_resize's own limit as a request error (it raises ValueError inside the processor)."""
    if max(height, width) > MAX_ASPECT * min(height, width):
        raise invalid("messages", f"the image is {width}x{height}; Qwen2.5-VL takes images whose longer side is at "
                                  f"most {MAX_ASPECT} times the shorter")


def resized_size(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """(height, width) after ``smart_resize``: transformers' own function (the count never drifts)."""
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

    check_aspect(height, width)
    return smart_resize(height, width, factor=factor, min_pixels=min_pixels, max_pixels=max_pixels)


def grid(height: int, width: int, config: GridConfig) -> tuple[int, int]:
    """(grid_h, grid_w) in patches for an image of this size."""
    h, w = resized_size(height, width, config.factor, config.min_pixels, config.max_pixels)
    return h // config.patch, w // config.patch


# ---- compact form ------------------------------------------------------------------------------


@dataclass(frozen=True)
class CompactGrid:
    """An image resized for the model, as uint8 HWC: what a queued request holds."""

    pixels: np.ndarray  # uint8 [grid_h * patch, grid_w * patch, 3]
    grid: tuple[int, int]  # (grid_h, grid_w) in patches

    @property
    def num_patches(self) -> int:
        return self.grid[0] * self.grid[1]

    @property
    def nbytes(self) -> int:
        return int(self.pixels.nbytes)


def compact(image, config: GridConfig) -> CompactGrid:
    """The processor's PIL resize of an RGB PIL image (as runtime/images.py decodes it)."""
    if image.mode != "RGB":
        image = image.convert("RGB")  # the processor's convert_rgb; decoded requests are RGB already
    h, w = resized_size(image.height, image.width, config.factor, config.min_pixels, config.max_pixels)
    # The same call transformers makes (reducing_gap None) on the same uint8 pixels: the same output.
    resized = np.array(image.resize((w, h), resample=config.resample, reducing_gap=None))
    return CompactGrid(resized, (h // config.patch, w // config.patch))


# ---- the fused pass ----------------------------------------------------------------------------


def pixel_values(images: list[CompactGrid], config: GridConfig, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The batch's ``pixel_values`` [all patches, features]: each image's rows in order, as the
    processor concatenates a list of images."""
    out = torch.empty((sum(c.num_patches for c in images), config.features), dtype=dtype)
    start = 0
    for image in images:
        write_patches(image, config, out[start : start + image.num_patches])
        start += image.num_patches
    return out


def write_patches(image: CompactGrid, config: GridConfig, out: torch.Tensor) -> None:
    """One image's patches into ``out`` [grid_h * grid_w, features] (every element written).

    Non-float32 outputs go through a float32 frame: what casting the processor's output gives.
    """
    frame = torch.empty((3, *image.pixels.shape[:2]), dtype=torch.float32)
    src = torch.from_numpy(image.pixels)
    rescale = pixels._exact_rescale(config)
    if rescale is not None:
        frame.copy_(src.permute(2, 0, 1))  # uint8 -> float32 is exact
        pixels._affine_(frame, config, rescale)
    else:
        view, idx = frame.numpy(), image.pixels
        for ch in range(3):
            np.take(config.table[ch], idx[:, :, ch], out=view[ch], mode="clip")
    out.view(*_layout(image.grid, config)).copy_(_patches(frame, image.grid, config))


def _layout(grid_hw: tuple[int, int], config: GridConfig) -> tuple[int, ...]:
    """``out`` seen as [blocks_h, blocks_w, merge, merge, channel, frame, patch, patch]."""
    m, p = config.merge, config.patch
    return grid_hw[0] // m, grid_hw[1] // m, m, m, 3, config.temporal, p, p


def _patches(frame: torch.Tensor, grid_hw: tuple[int, int], config: GridConfig) -> torch.Tensor:
    """The processor's transpose (0, 3, 6, 4, 7, 2, 1, 5, 8) of the repeated frame, as a view."""
    m, p = config.merge, config.patch
    bh, bw = grid_hw[0] // m, grid_hw[1] // m
    x = frame.view(3, bh, m, p, bw, m, p).permute(1, 4, 2, 5, 0, 3, 6)  # [bh, bw, m, m, c, p, p]
    return x.unsqueeze(5).expand(bh, bw, m, m, 3, config.temporal, p, p)


def tokens(grid_hw: tuple[int, int], config: GridConfig) -> int:
    """Prompt tokens of an image with this patch grid (merge x merge patches each)."""
    return math.prod(grid_hw) // (config.merge * config.merge)

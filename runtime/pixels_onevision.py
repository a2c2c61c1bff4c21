"""LLaVA-OneVision anyres patches, fast and exact: what LlavaOnevisionImageProcessor gives, from compact pixels.

What the model card's processor (``LlavaOnevisionImageProcessor``, the slow one) does to an RGB
image, read from transformers 4.57: pick the grid pinpoint (canvas) with
``select_best_resolution``; resize the uint8 image with PIL into it keeping the aspect ratio
(``get_patch_output_size``: ceil on the short side; bicubic, no reducing gap); pad it with uint8 0
to the canvas, *centred* (the odd pixel goes to the bottom/right); cut T x T patches row by row;
resize the original image once more, squashed to T x T, as the base view in front of them; then
per patch a no-op PIL resize (T x T to T x T returns a copy), rescale in float64 cast to float32,
normalize in float32, channels first: ``pixel_values`` [1 + rows x cols, 3, T, T]. Along the way
it converts PIL -> numpy -> PIL -> numpy for each patch and makes float64 copies of all of them.

Here that is two steps, as runtime/pixels.py does for Mllama:

- ``compact(image, config)`` — at request time: the two PIL resizes, kept as uint8 HWC
  (``CompactPatches``: the base T x T view and the resized image without its padding; 6.6 MB for
  a 1920x1080 photo against 28 MB of float32 patches), plus the canvas and the padding offsets.
- ``write_patches(compact, config, out)`` — at collate time: one pass that cuts, transposes,
  rescales, normalizes and pads straight into a preallocated [patches, 3, T, T] buffer.

Exactness: the same PIL calls on the same uint8 pixels give the same uint8 pixels, and the float
math on a uint8 is a per-channel table of 256 entries (runtime/pixels.py's argument and code: the
pass uses float32 arithmetic only when it reproduces that table for all 256 values, else looks
values up). The output equals the processor's bit for bit (tests/test_pixels_onevision.py).

One deliberate difference: transformers guesses the channel axis of the numpy array, so an image
1 or 3 pixels high (shape (1|3, W, 3)) is read as channels-first: 1 px high raises, 3 px high is
scrambled. This path reads every image as the RGB image it is, which is what the processor gives
when told ``input_data_format="channels_last"`` (the reference the tests use, and what
runtime/architectures/llava_onevision.py passes on its fallback path).

Run ``guardedge bench preprocess --arch llava_onevision`` for timings against transformers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import torch

from guardedge.runtime import pixels


@dataclass(frozen=True)
class PatchConfig:
    """The parts of a LlavaOnevisionImageProcessor configuration that decide its output."""

    tile: int
    pinpoints: tuple[tuple[int, int], ...]  # canvases (height, width), multiples of ``tile``
    resample: int  # a PIL resampling filter
    scale: float | None  # rescale factor; None when do_rescale is off
    mean: tuple[float, float, float] | None  # None when do_normalize is off
    std: tuple[float, float, float] | None
    table: np.ndarray = field(init=False, repr=False, compare=False)  # float32 [3, 256]

    def __post_init__(self) -> None:
        object.__setattr__(self, "table", pixels._table(self.scale, self.mean, self.std))

    @property
    def pad_values(self) -> np.ndarray:
        """What a padded pixel becomes: the processor pads with uint8 0 before rescaling."""
        return self.table[:, 0]


def config_from_processor(processor) -> tuple[PatchConfig | None, str]:
    """The processor's ``PatchConfig``, or None and why the fast path cannot reproduce it."""
    if type(processor).__name__ != "LlavaOnevisionImageProcessor":
        return None, f"{type(processor).__name__} is not LlavaOnevisionImageProcessor"
    size = processor.size
    if set(size) != {"height", "width"} or size["height"] != size["width"]:
        return None, f"patches are not given as a square height/width ({size})"
    if not (processor.do_convert_rgb and processor.do_resize):
        return None, "do_convert_rgb or do_resize is off"
    tile = int(size["height"])
    pinpoints = tuple((int(h), int(w)) for h, w in processor.image_grid_pinpoints)
    if not pinpoints or any(h % tile or w % tile or h <= 0 or w <= 0 for h, w in pinpoints):
        return None, f"grid pinpoints are not positive multiples of {tile}"
    math, why = pixels.pixel_math(processor)
    if math is None:
        return None, why
    return PatchConfig(tile, pinpoints, int(processor.resample), *math), ""


# ---- the plan: canvas, resized size, padding ---------------------------------------------------


@lru_cache(maxsize=1024)
def canvas(height: int, width: int, pinpoints: tuple[tuple[int, int], ...]) -> tuple[int, int]:
    """The processor's pinpoint for an image: transformers' own ``select_best_resolution``."""
    from transformers.image_processing_utils import select_best_resolution

    return tuple(select_best_resolution((height, width), list(pinpoints)))


def fit(height: int, width: int, canvas_h: int, canvas_w: int) -> tuple[int, int]:
    """(new_h, new_w) inside the canvas, as ``get_patch_output_size`` (ceil on the short side)."""
    scale_w, scale_h = canvas_w / width, canvas_h / height
    if scale_w < scale_h:
        return min(math.ceil(height * scale_w), canvas_h), canvas_w
    return canvas_h, min(math.ceil(width * scale_h), canvas_w)


def offsets(new_h: int, new_w: int, canvas_h: int, canvas_w: int) -> tuple[int, int]:
    """(top, left) padding: centred, the odd pixel at the bottom/right (``_get_padding_size``)."""
    return (canvas_h - new_h) // 2, (canvas_w - new_w) // 2


# ---- compact form ------------------------------------------------------------------------------


@dataclass(frozen=True)
class CompactPatches:
    """An image's anyres views as uint8 HWC, before padding and cutting: what a queued request holds."""

    base: np.ndarray  # uint8 [T, T, 3]: the whole image squashed to one patch
    pixels: np.ndarray  # uint8 [new_h, new_w, 3]: the image resized into its canvas, unpadded
    canvas: tuple[int, int]  # (height, width) of the chosen pinpoint
    offset: tuple[int, int]  # (top, left) of ``pixels`` on the canvas
    image_size: tuple[int, int]  # (height, width) of the original image
    num_patches: int  # 1 + rows x cols

    @property
    def nbytes(self) -> int:
        return int(self.base.nbytes + self.pixels.nbytes)


def compact(image, config: PatchConfig) -> CompactPatches:
    """Both resizes of an RGB PIL image (as runtime/images.py decodes it); the processor's PIL calls."""
    if image.mode != "RGB":
        image = image.convert("RGB")  # the processor's convert_rgb; decoded requests are RGB already
    height, width, t = image.height, image.width, config.tile
    canvas_hw = canvas(height, width, config.pinpoints)
    new_h, new_w = fit(height, width, *canvas_hw)
    # The same calls transformers makes (reducing_gap None) on the same uint8 pixels: the same output.
    resized = np.array(image.resize((new_w, new_h), resample=config.resample, reducing_gap=None))
    base = np.array(image.resize((t, t), resample=config.resample, reducing_gap=None))
    rows, cols = canvas_hw[0] // t, canvas_hw[1] // t
    return CompactPatches(base, resized, canvas_hw, offsets(new_h, new_w, *canvas_hw), (height, width), 1 + rows * cols)


# ---- the fused pass ----------------------------------------------------------------------------


def pixel_values(images: list[CompactPatches], config: PatchConfig, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The batch's ``pixel_values`` [n, most patches, 3, T, T] in ``dtype``; a shorter image's
    trailing patches are 0, as the engine (and transformers' ``_pad_for_batching``) pads them."""
    t = config.tile
    out = torch.empty((len(images), max(c.num_patches for c in images), 3, t, t), dtype=dtype)
    for i, image in enumerate(images):
        write_patches(image, config, out[i, : image.num_patches])
        out[i, image.num_patches :].zero_()
    return out


def write_patches(image: CompactPatches, config: PatchConfig, out: torch.Tensor) -> None:
    """Base view, then the canvas's patches row by row, into ``out`` [num_patches, 3, T, T].

    Every element is written, so ``out`` may come from ``torch.empty``. Non-float32 outputs go
    through a float32 patch: what casting the processor's float32 output gives.
    """
    t = config.tile
    f32 = out.dtype == torch.float32
    scratch = None if f32 else torch.empty((3, t, t), dtype=torch.float32)
    cols = image.canvas[1] // t
    src = torch.from_numpy(image.pixels)
    for k in range(image.num_patches):
        dst = out[k] if scratch is None else scratch  # scratch is None exactly when out is float32
        if k == 0:
            _window(torch.from_numpy(image.base), 0, 0, config, dst)
        else:
            r, c = divmod(k - 1, cols)
            _window(src, r * t - image.offset[0], c * t - image.offset[1], config, dst)
        if scratch is not None:
            out[k].copy_(scratch)


def _window(src: torch.Tensor, y: int, x: int, config: PatchConfig, dst: torch.Tensor) -> None:
    """``dst`` [3, T, T] = the T x T window of ``src`` (uint8 [h, w, 3]) at (y, x), in ``src``'s
    coordinates; what falls outside ``src`` is padding."""
    t, (h, w) = config.tile, src.shape[:2]
    y0, y1, x0, x1 = max(y, 0), min(y + t, h), max(x, 0), min(x + t, w)
    if y1 <= y0 or x1 <= x0:
        dst.copy_(_pad_column(config).expand(3, t, t))
        return
    if (y0 - y, x0 - x, y1 - y, x1 - x) != (0, 0, t, t):
        dst.copy_(_pad_column(config).expand(3, t, t))  # only edge patches pay this fill
    _convert(src[y0:y1, x0:x1], config, dst[:, y0 - y : y1 - y, x0 - x : x1 - x])


def _convert(src: torch.Tensor, config: PatchConfig, region: torch.Tensor) -> None:
    """uint8 [h, w, 3] -> the processor's float32 values in ``region`` [3, h, w]."""
    rescale = pixels._exact_rescale(config)
    if rescale is not None:
        region.copy_(src.permute(2, 0, 1))  # uint8 -> float32 is exact
        pixels._affine_(region, config, rescale)
        return
    table, idx = config.table, src.numpy()
    view = region.numpy()
    for ch in range(3):
        np.take(table[ch], idx[:, :, ch], out=view[ch], mode="clip")


@lru_cache(maxsize=64)
def _pad_column(config: PatchConfig) -> torch.Tensor:
    return torch.from_numpy(config.pad_values.copy()).view(3, 1, 1)

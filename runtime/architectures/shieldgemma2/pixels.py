"""Gemma 3 (ShieldGemma 2) pixels, fast and exact: what Gemma3ImageProcessor gives, from compact pixels.

What the processor ShieldGemma 2 ships (``Gemma3ImageProcessor``, pan-and-scan off: the processor
turns it off) does to an RGB image, read from transformers 4.57: convert to RGB, resize with PIL to
the square ``size`` (896 x 896 in the real checkpoint, bilinear, no reducing gap; the aspect ratio
is not kept), rescale in float64 cast to float32, normalize in float32 (mean/std 0.5), channels
first: ``pixel_values`` [3, S, S].

Here that is two steps, as runtime/pixels_onevision.py does for LLaVA-OneVision:

- ``compact(image, config)`` at request time: the one PIL resize, kept as uint8 HWC (2.4 MB at
  896 px against 9.6 MB of float32 pixels);
- ``pixel_values(images, config)`` at collate time: transpose, rescale and normalize in one pass
  into the batch's [n, 3, S, S] float buffer.

Exactness: the same PIL call on the same uint8 pixels gives the same uint8 pixels, and the float
math on a uint8 is a per-channel table of 256 entries (runtime/pixels.py: float32 arithmetic only
where it reproduces that table, else a lookup). tests/test_shieldgemma2.py checks the output equals
the processor's bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from guardedge.runtime import pixels


@dataclass(frozen=True)
class SquareConfig:
    """The parts of a Gemma3ImageProcessor configuration that decide its output."""

    size: int  # the square side every image is resized to
    resample: int  # a PIL resampling filter
    scale: float | None  # rescale factor; None when do_rescale is off
    mean: tuple[float, float, float] | None  # None when do_normalize is off
    std: tuple[float, float, float] | None
    table: np.ndarray = field(init=False, repr=False, compare=False)  # float32 [3, 256]

    def __post_init__(self) -> None:
        object.__setattr__(self, "table", pixels._table(self.scale, self.mean, self.std))


def config_from_processor(processor) -> tuple[SquareConfig | None, str]:
    """The processor's ``SquareConfig``, or None and why the fast path cannot reproduce it."""
    if type(processor).__name__ != "Gemma3ImageProcessor":
        return None, f"{type(processor).__name__} is not Gemma3ImageProcessor"
    size = processor.size
    if set(size) != {"height", "width"} or size["height"] != size["width"]:
        return None, f"the size is not a square height/width ({size})"
    if not (processor.do_convert_rgb and processor.do_resize):
        return None, "do_convert_rgb or do_resize is off"
    if getattr(processor, "do_pan_and_scan", False):
        return None, "pan-and-scan is on (ShieldGemma 2 turns it off)"
    math, why = pixels.pixel_math(processor)
    if math is None:
        return None, why
    return SquareConfig(int(size["height"]), int(processor.resample), *math), ""


def compact(image, config: SquareConfig) -> np.ndarray:
    """The processor's PIL resize of an RGB PIL image, as uint8 [S, S, 3]."""
    if image.mode != "RGB":
        image = image.convert("RGB")  # the processor's convert_rgb; decoded requests are RGB already
    # The same call transformers makes (reducing_gap None) on the same uint8 pixels: the same output.
    return np.array(image.resize((config.size, config.size), resample=config.resample, reducing_gap=None))


def pixel_values(images: list[np.ndarray], config: SquareConfig, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The batch's ``pixel_values`` [n, 3, S, S] in ``dtype`` (through float32, as casting the
    processor's float32 output would)."""
    out = torch.empty((len(images), 3, config.size, config.size), dtype=torch.float32)
    rescale = pixels._exact_rescale(config)
    for i, image in enumerate(images):
        src = torch.from_numpy(image)
        if rescale is not None:
            out[i].copy_(src.permute(2, 0, 1))  # uint8 -> float32 is exact
            pixels._affine_(out[i], config, rescale)
        else:
            view = out[i].numpy()
            for ch in range(3):
                np.take(config.table[ch], image[:, :, ch], out=view[ch], mode="clip")
    return out if dtype == torch.float32 else out.to(dtype)

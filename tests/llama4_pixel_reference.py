"""Reference pixels for Llama 4's image processor, and the images they are made from.

The model card runs transformers' ``Llama4ImageProcessorFast`` (``AutoProcessor``), which needs
torchvision; torchvision cannot be installed beside the project's torch. So the reference was made
once, in a separate virtualenv (Python 3.11, torch 2.14.1, torchvision 0.29.1, transformers 4.57.1,
from this machine's wheels), by running this file there:

    python3 -m venv /tmp/tv && /tmp/tv/bin/pip install torch==2.14.1 torchvision==0.29.1 transformers==4.57.1 pillow numpy
    /tmp/tv/bin/python tests/llama4_pixel_reference.py tests/data/llama4_pixels.npz

It writes, per (configuration, image size): the processor's ``aspect_ratios`` and the sha256 of its
``pixel_values`` (bfloat16 bits), the sum of each tile's values per channel (to locate a mismatch), plus
the whole ``pixel_values`` for the small cases. tests/test_llama4_pixels.py recreates the same images with
:func:`make_image` (numpy + PIL only, no torch) and checks runtime/architectures/llama4/pixels.py
against it bit for bit.
"""

from __future__ import annotations

import hashlib
import sys

import numpy as np

# (width, height): tiny, below a tile, at and around tile multiples, large, extreme aspect ratios.
SIZES = [(1, 1), (3, 2), (17, 40), (100, 50), (200, 200), (335, 336), (336, 336), (337, 336), (336, 672),
         (500, 375), (640, 480), (700, 1000), (1000, 700), (1024, 768), (1280, 720), (1920, 1080),
         (2000, 300), (300, 2000), (4000, 60), (90, 1500), (1343, 1343), (5000, 3000)]
DEMO_SIZES = [(64, 64), (96, 48), (48, 96), (160, 90), (200, 200), (56, 112), (120, 40), (300, 300), (20, 20), (57, 56)]
# Processor configurations: the real checkpoint's (336-px tiles, up to 16) and the demo's (56-px tiles).
CONFIGS = {"real": {"size": {"height": 336, "width": 336}, "max_patches": 16},
           "demo": {"size": {"height": 56, "width": 56}, "max_patches": 16}}
FULL_UP_TO = 5 * 3 * 56 * 56  # whole arrays are stored up to this many values (5 tiles of the demo's size)


def make_image(width: int, height: int, seed: int):
    """A deterministic RGB PIL image: gradients, a few blocks and pixel noise (same bytes everywhere)."""
    from PIL import Image

    rng = np.random.default_rng([width, height, seed])
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([(x * 255 // max(width - 1, 1)), (y * 255 // max(height - 1, 1)), ((x + y) * 7) % 256], axis=-1)
    for _ in range(4):
        x0, y0 = rng.integers(0, width), rng.integers(0, height)
        base[y0 : y0 + 1 + height // 4, x0 : x0 + 1 + width // 4] = rng.integers(0, 256, 3)
    noise = rng.integers(-20, 21, size=base.shape)
    return Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8), "RGB")


def cases():
    """(config name, width, height) for every reference case."""
    return [("real", w, h) for w, h in SIZES] + [("demo", w, h) for w, h in DEMO_SIZES]


def bits(pixel_values) -> np.ndarray:
    """bfloat16 values as their uint16 bit patterns (numpy has no bfloat16)."""
    import torch

    return pixel_values.to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)


def main(out: str) -> None:
    import torch
    import torchvision
    import transformers
    from transformers.models.llama4.image_processing_llama4_fast import Llama4ImageProcessorFast

    store = {"versions": np.array([f"torch {torch.__version__}", f"torchvision {torchvision.__version__}",
                                   f"transformers {transformers.__version__}"])}
    for name, width, height in cases():
        processor = Llama4ImageProcessorFast(**CONFIGS[name])
        out_ = processor(images=[make_image(width, height, 0)], return_tensors="pt")
        raw = bits(out_["pixel_values"])
        key = f"{name}_{width}x{height}"
        store[f"{key}_aspect"] = out_["aspect_ratios"][0].numpy()
        store[f"{key}_shape"] = np.array(raw.shape)
        store[f"{key}_sha256"] = np.array(hashlib.sha256(raw.tobytes()).hexdigest())
        store[f"{key}_sums"] = out_["pixel_values"].double().sum(dim=(2, 3)).numpy()
        if raw.size <= FULL_UP_TO:
            store[f"{key}_bits"] = raw
        print(key, tuple(raw.shape), out_["aspect_ratios"][0].tolist())
    np.savez_compressed(out, **store)


if __name__ == "__main__":
    main(sys.argv[1])

"""Llama 4 image preprocessing (runtime/architectures/llama4/pixels.py) against transformers'
Llama4ImageProcessorFast, bit for bit, on reference outputs committed as fixtures.

The reference (tests/data/llama4_pixels.npz) was made by tests/llama4_pixel_reference.py in a
separate virtualenv with torchvision (transformers 4.57.1, torch 2.14.1, torchvision 0.29.1): the
processor cannot run in the project's own environment, which has no torchvision.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

import llama4_pixel_reference as ref  # noqa: E402

from guardedge.runtime.architectures.llama4 import pixels  # noqa: E402

FIXTURES = np.load(Path(__file__).parent / "data" / "llama4_pixels.npz")


def _config(name: str) -> pixels.TileConfig:
    return pixels.config_from_json(ref.CONFIGS[name])


@pytest.mark.parametrize("name,width,height", ref.cases())
def test_pixel_values_equal_the_fast_processor_bit_for_bit(name, width, height):
    cfg = _config(name)
    image = pixels.compact(ref.make_image(width, height, 0), cfg)
    values = pixels.tiles(image, cfg)
    key = f"{name}_{width}x{height}"
    assert [image.rows, image.cols] == FIXTURES[f"{key}_aspect"].tolist()
    assert list(values.shape) == FIXTURES[f"{key}_shape"].tolist()
    assert values.dtype == torch.bfloat16
    raw = ref.bits(values)
    if f"{key}_bits" in FIXTURES:
        assert np.array_equal(raw, FIXTURES[f"{key}_bits"])
    # Where a mismatch is (per tile and channel), before the exact check.
    np.testing.assert_allclose(values.double().sum(dim=(2, 3)).numpy(), FIXTURES[f"{key}_sums"], rtol=0, atol=1e-9)
    assert hashlib.sha256(raw.tobytes()).hexdigest() == str(FIXTURES[f"{key}_sha256"])


def test_the_fixtures_were_made_by_the_named_reference():
    assert FIXTURES["versions"].tolist()[1:] == ["torchvision 0.29.1+cu130", "transformers 4.57.1"]


def test_grid_never_upsamples_an_image_larger_than_a_tile():
    cfg = pixels.TileConfig()
    canvas = pixels.best_canvas(400, 500, cfg)  # (h, w): 2 x 2 tiles hold it without upscaling
    assert canvas == (672, 672) and pixels.resized_size(400, 500, canvas, cfg) == (400, 500)
    small = pixels.best_canvas(100, 50, cfg)  # smaller than a tile: upsampled to the tile
    assert small == (336, 336) and pixels.resized_size(100, 50, small, cfg) == (336, 168)
    assert pixels.grid(1920, 1080, cfg) == (3, 5) and pixels.grid(10000, 100, cfg) == (1, 16)


def test_unsupported_processor_settings_are_named():
    with pytest.raises(ValueError, match="resample=3"):
        pixels.config_from_json({"resample": 3})
    with pytest.raises(ValueError, match="square"):
        pixels.config_from_json({"size": {"height": 336, "width": 224}})
    with pytest.raises(ValueError, match="resize_to_max_canvas"):
        pixels.config_from_json({"resize_to_max_canvas": True})


def test_compact_image_is_uint8_and_tiles_follow_the_grid():
    cfg = pixels.TileConfig(tile=56)
    image = pixels.compact(ref.make_image(160, 90, 1), cfg)
    assert image.resized.dtype == torch.uint8 and image.global_view.shape == (3, 56, 56)
    assert image.num_tiles == image.rows * image.cols + 1
    batch = pixels.pixel_values([image, pixels.compact(ref.make_image(20, 20, 2), cfg)], cfg)
    assert batch.shape[0] == image.num_tiles + 1

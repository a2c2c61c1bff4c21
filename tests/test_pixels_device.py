"""The GPU option's logic, run on CPU tensors: the same tiling math, a resize within one level of PIL's.

Decoding with nvJPEG and the timing need a GPU machine with torchvision (``guardedge bench
preprocess --device cuda``); these tests need neither.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from guardedge.runtime import pixels, pixels_device
from test_pixels import REAL, noise

CONFIG, _ = pixels.config_from_processor(REAL)


@pytest.mark.parametrize("size", [(1920, 1080), (333, 201), (1, 1), (4000, 300)])
def test_device_math_on_cpu_is_within_one_level_of_the_cpu_path(size):
    image = noise(*size, seed=4)
    compact = pixels.compact(image, CONFIG)
    chw = torch.from_numpy(np.array(image)).permute(2, 0, 1)
    resized = pixels_device.resize_bilinear(chw, *compact.pixels.shape[:2])
    assert (resized.permute(1, 2, 0).int() - torch.from_numpy(compact.pixels).int()).abs().max() <= 1
    values, ratio_id, num_tiles = pixels_device.tiles_from_chw(chw, CONFIG)
    reference = pixels.pixel_values([compact], CONFIG)[0, 0]
    assert (ratio_id, num_tiles) == (compact.aspect_ratio_id, compact.num_tiles)
    one_level = 1 / 255 / min(CONFIG.std) + 1e-6
    assert (values - reference).abs().max() <= one_level


def test_same_canvas_gives_identical_tiles():
    compact = pixels.compact(noise(1200, 700, seed=2), CONFIG)
    out = torch.empty((4, 3, 560, 560))
    pixels.write_canvas(torch.from_numpy(compact.pixels).clone(), compact.grid, CONFIG, out)
    assert torch.equal(out, pixels.pixel_values([compact], CONFIG)[0, 0])


def test_decode_without_torchvision_says_what_to_install(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_torchvision(name, *args, **kwargs):
        if name.startswith("torchvision"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_torchvision)
    assert not pixels_device.available()
    with pytest.raises(RuntimeError, match="torchvision"):
        pixels_device.decode_jpeg(b"\xff\xd8", "cpu")

"""runtime/architectures/qwen2_5_vl/pixels.py gives transformers' Qwen2VLImageProcessor output bit for bit.

Compared with the slow processor (PIL/numpy, what the model card's AutoProcessor runs without
torchvision) at the real configuration (min 3136, max 12,845,056 pixels, 14-px patches, 2 frames,
2 x 2 merge, CLIP mean/std) and at the demo QwenGuard's (max 28 x 28 x 64 pixels), on odd sizes
(both smart_resize branches: up to min_pixels and down to max_pixels), images decoded as the
engine decodes them, the table-lookup path and a batch of several images. The reference call
passes ``input_data_format="channels_last"`` (the module docstring says why).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import Qwen2VLImageProcessor

from guardedge.runtime import pixels
from guardedge.runtime.architectures.qwen2_5_vl import pixels as qp
from guardedge.runtime.images import ImageLimits, load_image

from test_pixels import decoded_inputs, noise

REAL = Qwen2VLImageProcessor(min_pixels=3136, max_pixels=12845056)  # Qwen2.5-VL's preprocessor_config
DEMO = Qwen2VLImageProcessor(min_pixels=3136, max_pixels=28 * 28 * 64)  # the demo QwenGuard's


def reference(processor, image) -> dict:
    return processor(images=[image], return_tensors="pt", input_data_format="channels_last")


def assert_exact(processor, image) -> qp.CompactGrid:
    config, why = qp.config_from_processor(processor)
    assert config is not None, why
    c = qp.compact(image, config)
    ref = reference(processor, image)
    values = qp.pixel_values([c], config)
    assert values.dtype == torch.float32 and values.shape == ref["pixel_values"].shape
    assert torch.equal(values, ref["pixel_values"]), f"max |diff| {(values - ref['pixel_values']).abs().max()}"
    assert ref["image_grid_thw"][0].tolist() == [1, *c.grid] and qp.tokens(c.grid, config) == c.num_patches // 4
    return c


@pytest.mark.parametrize("size", [(1, 1), (3, 500), (500, 3), (29, 27), (57, 91), (640, 480), (1920, 1080), (300, 2)])
def test_odd_sizes_real_config(size):
    assert_exact(REAL, noise(*size))


@pytest.mark.parametrize("size", [(1, 1), (20, 20), (96, 64), (64, 96), (300, 200), (1000, 30), (2000, 1500)])
def test_demo_config(size):
    assert_exact(DEMO, noise(*size, seed=3))


def test_above_max_pixels_is_shrunk_like_the_processor():
    """smart_resize's max_pixels branch at a 1 Mpx budget (the real 12.8 Mpx one costs seconds per image)."""
    processor = Qwen2VLImageProcessor(min_pixels=3136, max_pixels=1_000_000)
    c = assert_exact(processor, noise(1400, 900, seed=4))
    assert c.pixels.shape[0] * c.pixels.shape[1] <= 1_000_000 < 1400 * 900 and c.grid == (784 // 14, 1232 // 14)


def test_1080p_is_compact():
    c = assert_exact(REAL, noise(1920, 1080))
    assert c.grid == (78, 138) and c.pixels.shape == (1092, 1932, 3)
    assert c.nbytes == 1092 * 1932 * 3 and c.nbytes * 8 == c.num_patches * 1176 * 4  # a float32 frame twice = 8x


def test_table_lookup_path_is_exact_too(monkeypatch):
    monkeypatch.setattr(pixels, "_exact_rescale", lambda config: None)
    assert_exact(REAL, noise(500, 300, seed=7))
    assert_exact(DEMO, noise(100, 30, seed=7))


def test_a_batch_is_its_images_in_order():
    config, _ = qp.config_from_processor(DEMO)
    images = [noise(20, 20), noise(150, 90, seed=2), noise(33, 70, seed=5)]
    batch = qp.pixel_values([qp.compact(im, config) for im in images], config)
    ref = DEMO(images=images, return_tensors="pt", input_data_format="channels_last")
    assert torch.equal(batch, ref["pixel_values"])


@pytest.mark.parametrize("name", list(decoded_inputs()))
def test_decoded_inputs_match(name):
    assert_exact(DEMO, load_image(decoded_inputs()[name], "image", name, ImageLimits()).image)


def test_other_processors_are_not_claimed():
    assert "is not Qwen2VLImageProcessor" in qp.config_from_processor(object())[1]
    odd = Qwen2VLImageProcessor(do_resize=False)
    assert "do_resize" in qp.config_from_processor(odd)[1]


def test_transformers_guesses_the_channel_axis_of_short_images():
    """Why the reference passes channels_last: the default call misreads a 3-pixel-high image."""
    image = noise(500, 3)
    guessed = REAL(images=[image], return_tensors="pt")["image_grid_thw"][0].tolist()
    assert guessed != reference(REAL, image)["image_grid_thw"][0].tolist()
    assert np.array(image).shape == (3, 500, 3)

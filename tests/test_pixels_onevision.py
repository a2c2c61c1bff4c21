"""runtime/pixels_onevision.py gives transformers' LlavaOnevisionImageProcessor output bit for bit.

Compared with the slow processor (use_fast=False, what the model card runs) at the real
configuration (384-px patches, the 6 x 6 anyres_max_9 pinpoints, bicubic, SigLIP mean/std 0.5) and
at the demo LlavaGuard's (28-px patches, the same pinpoints in units of 28), on odd sizes, every
pinpoint, and images decoded as the engine decodes them (EXIF, grey, CMYK, palette, alpha). The
reference call passes ``input_data_format="channels_last"``: without it transformers misreads an
image 1 or 3 pixels high (see the module docstring); ``test_transformers_guesses_*`` pins that.
"""

from __future__ import annotations

import base64
import logging
import random

import numpy as np
import pytest
import torch
from transformers import LlavaOnevisionImageProcessor
from transformers.image_processing_utils import get_patch_output_size, select_best_resolution

from guardedge.runtime import pixels, pixels_onevision as po
from guardedge.runtime.architectures.llava_onevision import LlavaOneVision
from guardedge.runtime.demo.llavaguard import layout
from guardedge.runtime.images import ImageLimits, load_image
from guardedge.runtime.preprocess import Preprocessor

from test_pixels import decoded_inputs, encoded, noise

REAL = LlavaOnevisionImageProcessor(image_mean=[0.5] * 3, image_std=[0.5] * 3)  # LlavaGuard v1.2's preprocessor_config
DEMO = layout.image_processor()
PINPOINTS = [(h, w) for h in range(1, 7) for w in range(1, 7)]  # in patches


def reference(processor, image) -> torch.Tensor:
    return processor(images=[image], return_tensors="pt", input_data_format="channels_last")["pixel_values"][0]


def fast(processor, image, dtype=torch.float32) -> tuple[torch.Tensor, po.CompactPatches]:
    config, why = po.config_from_processor(processor)
    assert config is not None, why
    c = po.compact(image, config)
    return po.pixel_values([c], config, dtype)[0], c


def assert_exact(processor, image) -> po.CompactPatches:
    ref = reference(processor, image)
    values, c = fast(processor, image)
    assert values.dtype == torch.float32 and values.shape == ref.shape
    assert torch.equal(values, ref), f"max |diff| {(values - ref).abs().max()}"
    assert c.image_size == (image.height, image.width) and c.num_patches == ref.shape[0]
    return c


@pytest.mark.parametrize("size", [(1, 1), (3, 1000), (1000, 3), (1000, 1), (385, 383), (4000, 300), (300, 4000), (777, 333)])
def test_odd_sizes_real_config(size):
    assert_exact(REAL, noise(*size))


@pytest.mark.parametrize("size", [(1, 1), (29, 27), (96, 64), (160, 90), (40, 120), (400, 30), (1920, 1080), (3, 3)])
def test_demo_config(size):
    assert_exact(DEMO, noise(*size, seed=1))


@pytest.mark.parametrize("pinpoint", PINPOINTS, ids=[f"{h}x{w}" for h, w in PINPOINTS])
def test_every_pinpoint_demo_config(pinpoint):
    rows, cols = pinpoint
    image = noise(cols * 28 - 5, rows * 28 - 3, seed=rows * 10 + cols)  # slightly under: this pinpoint, padded
    c = assert_exact(DEMO, image)
    assert c.canvas == (rows * 28, cols * 28) and c.num_patches == 1 + rows * cols


@pytest.mark.parametrize("pinpoint", [(1, 6), (6, 1)], ids=str)
def test_pinpoints_real_config(pinpoint):
    rows, cols = pinpoint
    c = assert_exact(REAL, noise(cols * 384 - 37, rows * 384 - 11, seed=rows * 10 + cols))
    assert c.canvas == (rows * 384, cols * 384)


def test_every_real_pinpoint_is_chosen_for_some_size():
    config, _ = po.config_from_processor(REAL)
    chosen = {po.canvas(h * 384 - 11, w * 384 - 37, config.pinpoints) for h, w in PINPOINTS}
    assert chosen == set(config.pinpoints) and len(chosen) == 36


def test_plan_agrees_with_transformers_on_many_sizes():
    rnd = random.Random(13)
    sizes = [(rnd.randint(1, 6000), rnd.randint(1, 6000)) for _ in range(3000)] + [(h, w) for h in range(1, 60, 7) for w in range(1, 3000, 97)]
    for processor in (REAL, DEMO):
        config, _ = po.config_from_processor(processor)
        for h, w in sizes:
            canvas = select_best_resolution((h, w), processor.image_grid_pinpoints)
            assert po.canvas(h, w, config.pinpoints) == tuple(canvas)
            stand_in = np.broadcast_to(np.zeros((1, 1, 3), np.uint8), (h, w, 3))  # no memory, only a shape
            new = get_patch_output_size(stand_in, canvas, "channels_last")
            assert po.fit(h, w, *canvas) == new, (h, w)
            (top, _), (left, _) = processor._get_padding_size(new, canvas)
            assert po.offsets(*new, *canvas) == (top, left), (h, w)


def test_1080p_is_3x5_plus_base_and_compact_is_small():
    c = assert_exact(REAL, noise(1920, 1080))
    assert (c.canvas, c.num_patches, c.offset, c.pixels.shape) == ((1152, 1920), 16, (36, 0), (1080, 1920, 3))
    assert c.nbytes == (384 * 384 + 1080 * 1920) * 3 < 16 * 3 * 384 * 384 * 4 / 4


def test_model_dtype_is_the_float32_result_cast():
    image = noise(500, 300, seed=5)
    f32, _ = fast(REAL, image)
    for dtype in (torch.bfloat16, torch.float16):
        assert torch.equal(fast(REAL, image, dtype)[0], f32.to(dtype))


def test_table_lookup_path_is_exact_too(monkeypatch):
    monkeypatch.setattr(pixels, "_exact_rescale", lambda config: None)
    assert_exact(REAL, noise(500, 300, seed=7))
    assert_exact(DEMO, noise(100, 30, seed=7))


def test_batches_pad_shorter_images_with_zero_patches():
    config, _ = po.config_from_processor(DEMO)
    small, large = po.compact(noise(20, 20), config), po.compact(noise(150, 90, seed=2), config)
    batch = po.pixel_values([small, large], config)
    assert batch.shape == (2, large.num_patches, 3, 28, 28) and small.num_patches < large.num_patches
    assert torch.equal(batch[0, : small.num_patches], reference(DEMO, noise(20, 20)))
    assert not batch[0, small.num_patches :].any()


def test_other_processors_are_not_claimed():
    assert "is not LlavaOnevisionImageProcessor" in po.config_from_processor(object())[1]
    odd = layout.image_processor()
    odd.size = {"height": 28, "width": 56}
    assert "square" in po.config_from_processor(odd)[1]
    odd = layout.image_processor()
    odd.image_grid_pinpoints = [[28, 42]]
    assert "multiples" in po.config_from_processor(odd)[1]


def test_transformers_guesses_the_channel_axis_of_short_images():
    """Why the reference passes channels_last: the default call misreads 1- and 3-pixel-high images."""
    with pytest.raises(ValueError):
        REAL(images=[noise(1000, 1)], return_tensors="pt")
    guessed = REAL(images=[noise(1000, 3)], return_tensors="pt")
    assert guessed["image_sizes"][0].tolist() == [1000, 3]  # a 1000-wide, 3-high image, read as 3 x 1000


@pytest.mark.parametrize("processor, size", [(REAL, (3000, 3)), (REAL, (7000, 1)), (DEMO, (1000, 3)), (DEMO, (200, 1))],
                         ids=["real-3000x3", "real-7000x1", "demo-1000x3", "demo-200x1"])
def test_transformers_mispads_images_resized_to_1_or_3_rows(processor, size):
    """Even with channels_last, its padding step guesses again: an image resized to 1 or 3 rows is
    padded along the wrong axes and comes out with an extra patch (which the image's token count,
    from its size, does not cover). The fast path gives the patches the other sizes get."""
    image = noise(*size)
    config, _ = po.config_from_processor(processor)
    c = po.compact(image, config)
    assert c.pixels.shape[0] in (1, 3)
    rows, cols = c.canvas[0] // config.tile, c.canvas[1] // config.tile
    assert c.num_patches == 1 + rows * cols == reference(processor, image).shape[0] - 1


# ---- through the engine's decoder ---------------------------------------------------------------


REAL_DECODED = ("jpeg-exif-rotated", "cmyk-jpeg", "palette-transparent", "la")  # the rest at the demo configuration only


@pytest.mark.parametrize("name, processor", [(n, DEMO) for n in decoded_inputs()] + [(n, REAL) for n in REAL_DECODED],
                         ids=[f"demo-{n}" for n in decoded_inputs()] + [f"real-{n}" for n in REAL_DECODED])
def test_decoded_inputs_match(name, processor):
    image = load_image(decoded_inputs()[name], "image", name, ImageLimits()).image
    if name == "jpeg-exif-rotated":
        assert image.size == (201, 333)  # the orientation was applied before preprocessing
    assert_exact(processor, image)


# ---- the engine (demo LlavaGuard) ---------------------------------------------------------------


@pytest.fixture(scope="module")
def lg_engine():
    from guardedge.runtime.engine import EngineOptions, load_engine

    return load_engine("demo-llavaguard", EngineOptions(max_batch_size=8, progress=False))


def _arch(engine, image_processor, fast_pixels: bool = True) -> LlavaOneVision:
    return LlavaOneVision(engine.model_dir.path, engine.model_dir.config, engine.pre.tokenizer, engine.family.image_token,
                          image_processor=image_processor, fast_pixels=fast_pixels)


def _request(size: tuple[int, int], seed: int) -> dict:
    data = base64.b64encode(encoded(noise(*size, seed=seed), "PNG")).decode()
    return {"messages": [{"role": "user", "content": [{"type": "image", "data": data}]}]}


SIZES = [(96, 64), (40, 120), (300, 20), (57, 57), (100, 3), (5, 900)]


def test_preprocessor_fast_and_transformers_batches_are_identical(lg_engine):
    pre = lg_engine.pre
    slow = Preprocessor(pre.tokenizer, _arch(lg_engine, pre.image_processor, fast_pixels=False), pre.family, pre.max_text_tokens)
    assert pre.arch.patches is not None and slow.arch.patches is None
    requests = [lg_engine.parse(_request(size, i)) for i, size in enumerate(SIZES)]
    a, b = pre.collate([pre.encode(r) for r in requests]), slow.collate([slow.encode(r) for r in requests])
    assert a.extra["pixel_values"].dtype == torch.float32
    assert len({pre.encode(r).image.num_patches for r in requests}) > 2  # zero-padded patches are compared too
    assert torch.equal(a.input_ids, b.input_ids) and torch.equal(a.attention_mask, b.attention_mask)
    for field in ("pixel_values", "image_sizes"):
        assert torch.equal(a.extra[field], b.extra[field]), field
    assert pre.encode(requests[0]).image.pixel_values is None  # the queue holds the compact form


def test_engine_verdicts_unchanged_fast_vs_transformers(lg_engine, monkeypatch):
    from guardedge.runtime.demo.llavaguard.data import examples

    requests = [lg_engine.parse(_request(size, i)) for i, size in enumerate(SIZES[:2])]
    for i, ex in enumerate(examples("eval", 2)):
        data = base64.b64encode(encoded(ex["image"].render(), "PNG")).decode()
        requests.append(lg_engine.parse({"messages": [{"role": "user", "content": [{"type": "image", "data": data}]}],
                                         "excluded_category_keys": list(ex["excluded"]), "rationale": i == 0}))
    fast_verdicts = lg_engine.classify(requests)
    monkeypatch.setattr(lg_engine.pre.arch, "patches", None)
    slow_verdicts = lg_engine.classify(requests)
    assert {v.verdict for v in fast_verdicts} == {"safe", "unsafe"}  # both answers are compared
    for f, s in zip(fast_verdicts, slow_verdicts):
        assert (f.verdict, f.categories, f.raw_output) == (s.verdict, s.categories, s.raw_output)
        assert (f.unsafe_probability, f.safe_probability) == (s.unsafe_probability, s.safe_probability)


def test_unsupported_processor_falls_back_and_says_so(lg_engine, caplog):
    pre = lg_engine.pre
    with caplog.at_level(logging.INFO, logger="guardedge.runtime.architectures.llava_onevision"):
        other = _arch(lg_engine, _Wrapped(pre.image_processor))
    assert other.patches is None and "is not LlavaOnevisionImageProcessor" in caplog.text
    image = noise(80, 50)
    encoded_image = other.encode_image(image)
    assert torch.equal(encoded_image.pixel_values, reference(pre.image_processor, image))
    assert encoded_image.tokens == pre.arch.encode_image(image).tokens


class _Wrapped:
    """A processor the fast path does not know (it delegates to a real one)."""

    def __init__(self, inner):
        self.inner = inner

    def __call__(self, **kwargs):
        return self.inner(**kwargs)

    def __getattr__(self, name):
        return getattr(self.inner, name)

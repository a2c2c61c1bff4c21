"""runtime/pixels.py gives transformers' MllamaImageProcessor output bit for bit, from compact pixels.

Compared with the slow processor (use_fast=False, what the model card runs) at the real
configuration (560-px tiles, at most 4, CLIP mean/std) and the demo guard's (56-px tiles), on odd
sizes, every grid, and images decoded as the engine decodes them (EXIF, grey, CMYK, palette, alpha).
"""

from __future__ import annotations

import base64
import io
import logging
import random

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import MllamaImageProcessor
from transformers.models.mllama.image_processing_mllama import get_image_size_fit_to_canvas, get_optimal_tiled_canvas

from guardedge.runtime import pixels
from guardedge.runtime.images import ImageLimits, load_image
from guardedge.runtime.architectures.mllama import Mllama
from guardedge.runtime.preprocess import Preprocessor

CLIP = {"image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711]}
REAL = MllamaImageProcessor(size={"height": 560, "width": 560}, max_image_tiles=4, **CLIP)
DEMO = MllamaImageProcessor(size={"height": 56, "width": 56}, max_image_tiles=4)
GRIDS = [(1, 1), (1, 2), (1, 3), (1, 4), (2, 1), (2, 2), (3, 1), (4, 1)]


def noise(width: int, height: int, seed: int = 0) -> Image.Image:
    """Random pixels over a gradient: every resize weight and every uint8 value gets exercised."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 255, width, dtype=np.float32)[None, :, None]
    pixels_ = np.clip(ramp + rng.normal(0, 60, (height, width, 3)), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels_, "RGB")


def fast(processor, image) -> tuple[torch.Tensor, int, torch.Tensor, int]:
    config, why = pixels.config_from_processor(processor)
    assert config is not None, why
    c = pixels.compact(image, config)
    return pixels.pixel_values([c], config)[0, 0], c.aspect_ratio_id, pixels.aspect_ratio_mask(c.num_tiles, config.max_tiles), c.num_tiles


def assert_exact(processor, image) -> None:
    ref = processor(images=[[image]], return_tensors="pt")
    values, ratio_id, mask, num_tiles = fast(processor, image)
    assert values.dtype == torch.float32 and values.shape == ref["pixel_values"][0, 0].shape
    assert torch.equal(values, ref["pixel_values"][0, 0]), f"max |diff| {(values - ref['pixel_values'][0, 0]).abs().max()}"
    assert (ratio_id, num_tiles) == (int(ref["aspect_ratio_ids"][0, 0]), ref["num_tiles"][0][0])
    assert torch.equal(mask, ref["aspect_ratio_mask"][0, 0])


@pytest.mark.parametrize("size", [(1, 1), (3, 1000), (1000, 3), (561, 559), (1920, 1080), (4000, 300), (300, 4000), (777, 333)])
def test_odd_sizes_real_config(size):
    assert_exact(REAL, noise(*size))


@pytest.mark.parametrize("size", [(1, 1), (57, 55), (96, 64), (160, 90), (40, 120), (400, 30), (1920, 1080)])
def test_demo_config(size):
    assert_exact(DEMO, noise(*size, seed=1))


@pytest.mark.parametrize("grid", GRIDS)
def test_every_grid(grid):
    rows, cols = grid
    image = noise(cols * 560 - 37, rows * 560 - 11, seed=rows * 10 + cols)  # slightly under: upscale into this grid
    assert fast(REAL, image)[1] == GRIDS.index(grid) + 1
    assert_exact(REAL, image)


def test_grid_and_size_agree_with_transformers_on_many_sizes():
    rnd = random.Random(13)
    sizes = [(rnd.randint(1, 5000), rnd.randint(1, 5000)) for _ in range(3000)] + [(h, w) for h in range(1, 60, 7) for w in range(1, 3000, 97)]
    for tile in (56, 560):
        for h, w in sizes:
            canvas = tuple(int(v) for v in get_optimal_tiled_canvas(h, w, 4, tile))
            (rows, cols), new = pixels.plan(h, w, tile, 4)
            assert (rows * tile, cols * tile) == canvas, (h, w)
            assert new == tuple(int(v) for v in get_image_size_fit_to_canvas(h, w, canvas[0], canvas[1], tile)), (h, w)


def test_1080p_is_2x2_id_6_and_compact_is_small():
    config, _ = pixels.config_from_processor(REAL)
    c = pixels.compact(noise(1920, 1080), config)
    assert (c.grid, c.aspect_ratio_id, c.pixels.shape) == ((2, 2), 6, (630, 1120, 3))
    assert c.nbytes == 630 * 1120 * 3 < 4 * 3 * 560 * 560 * 4 / 7


def test_model_dtype_is_the_float32_result_cast():
    config, _ = pixels.config_from_processor(REAL)
    c = pixels.compact(noise(700, 1300, seed=5), config)
    f32 = pixels.pixel_values([c], config)
    for dtype in (torch.bfloat16, torch.float16):
        assert torch.equal(pixels.pixel_values([c], config, dtype), f32.to(dtype))


def test_table_lookup_path_is_exact_too(monkeypatch):
    monkeypatch.setattr(pixels, "_exact_rescale", lambda config: None)
    assert_exact(REAL, noise(1000, 700, seed=7))


def test_float32_arithmetic_is_chosen_only_when_it_matches_the_table():
    config, _ = pixels.config_from_processor(REAL)
    assert pixels._exact_rescale(config) == ("div", 255.0)  # multiplying by 1/255 in float32 would not match


def test_other_processors_are_not_claimed():
    assert pixels.config_from_processor(object())[0] is None
    odd = MllamaImageProcessor(size={"height": 56, "width": 56})
    odd.size = {"height": 56, "width": 64}  # the constructor refuses this; a loaded config might not
    assert "not square" in pixels.config_from_processor(odd)[1]
    grey = MllamaImageProcessor(do_convert_rgb=False)
    assert "do_convert_rgb" in pixels.config_from_processor(grey)[1]


# ---- through the engine's decoder ---------------------------------------------------------------


def encoded(image: Image.Image, fmt: str, **save) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **save)
    return buf.getvalue()


def decoded_inputs() -> dict[str, bytes]:
    base = noise(333, 201, seed=9)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise on display
    rgba = base.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(base.size))
    la = base.convert("LA")
    la.putalpha(Image.linear_gradient("L").resize(base.size))
    palette = base.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    return {
        "jpeg-exif-rotated": encoded(base, "JPEG", exif=exif, quality=90),
        "grey-L": encoded(base.convert("L"), "PNG"),
        "cmyk-jpeg": encoded(base.convert("CMYK"), "JPEG"),
        "palette-P": encoded(palette, "PNG"),
        "palette-transparent": encoded(palette, "PNG", transparency=0),
        "rgba": encoded(rgba, "PNG"),
        "la": encoded(la, "PNG"),
        "gif": encoded(base, "GIF"),
    }


@pytest.mark.parametrize("name", list(decoded_inputs()))
@pytest.mark.parametrize("processor", [REAL, DEMO], ids=["real", "demo"])
def test_decoded_inputs_match(name, processor):
    image = load_image(decoded_inputs()[name], "image", name, ImageLimits()).image
    if name == "jpeg-exif-rotated":
        assert image.size == (201, 333)  # the orientation was applied before preprocessing
    assert_exact(processor, image)


# ---- the engine ---------------------------------------------------------------------------------


def test_preprocessor_fast_and_transformers_batches_are_identical(demo_engine):
    pre = demo_engine.pre
    slow = Preprocessor(pre.tokenizer, _mllama(demo_engine, pre.image_processor, fast_pixels=False), pre.family,
                        pre.max_text_tokens)
    assert pre.arch.tiles is not None and slow.arch.tiles is None
    requests = [demo_engine.parse(_request(size, i)) for i, size in enumerate([(96, 64), (40, 120), (300, 20), (57, 57)])]
    requests.insert(1, demo_engine.parse({"messages": [{"role": "user", "content": "no image here"}]}))
    a, b = pre.collate([pre.encode(r) for r in requests]), slow.collate([slow.encode(r) for r in requests])
    assert a.extra["pixel_values"].shape == (4, 1, 4, 3, 56, 56)
    assert torch.equal(a.input_ids, b.input_ids)
    for field in ("cross_attention_mask", "pixel_values", "aspect_ratio_ids", "aspect_ratio_mask"):
        assert torch.equal(a.extra[field], b.extra[field]), field
    assert pre.encode(requests[0]).image.pixel_values is None  # the queue holds the compact form


def test_engine_verdicts_unchanged_on_demo_samples(demo_engine, monkeypatch):
    from guardedge.runtime.demo.samples import samples

    requests = [demo_engine.parse({k: v for k, v in s.items() if k != "expected"}) for s in samples()]
    requests += [demo_engine.parse(_request(size, i)) for i, size in enumerate([(160, 90), (33, 200), (64, 64)])]
    fast_verdicts = demo_engine.classify(requests)
    monkeypatch.setattr(demo_engine.pre.arch, "tiles", None)
    slow_verdicts = demo_engine.classify(requests)
    for f, s in zip(fast_verdicts, slow_verdicts):
        assert (f.verdict, f.categories, f.raw_output) == (s.verdict, s.categories, s.raw_output)
        assert (f.unsafe_probability, f.safe_probability) == (s.unsafe_probability, s.safe_probability)


def test_unsupported_processor_falls_back_and_says_so(demo_engine, caplog):
    pre = demo_engine.pre
    with caplog.at_level(logging.INFO, logger="guardedge.runtime.architectures.mllama"):
        other = _mllama(demo_engine, _Wrapped(pre.image_processor))
    assert other.tiles is None and "is not MllamaImageProcessor" in caplog.text
    image = noise(80, 50)
    assert torch.equal(other.encode_image(image).pixel_values, pre.image_processor(images=[[image]], return_tensors="pt")["pixel_values"][0, 0])


def _mllama(engine, image_processor, fast_pixels: bool = True) -> Mllama:
    return Mllama(None, engine.model_dir.config, engine.pre.tokenizer, engine.family.image_token,
                  image_processor=image_processor, fast_pixels=fast_pixels)


class _Wrapped:
    """A processor the fast path does not know (it delegates to a real one)."""

    def __init__(self, inner):
        self.inner = inner

    def __call__(self, **kwargs):
        return self.inner(**kwargs)


def _request(size: tuple[int, int], seed: int) -> dict:
    data = base64.b64encode(encoded(noise(*size, seed=seed), "PNG")).decode()
    return {"messages": [{"role": "user", "content": [{"type": "text", "text": "What is this?"}, {"type": "image", "data": data}]}]}


def test_prepared_request_drops_the_decoded_image(demo_engine):
    request = demo_engine.parse(_request((640, 480), 3))
    prepared = demo_engine.prepare(request)
    assert request.image.data is not None  # the caller's request is untouched
    assert prepared.request.image.image is None and prepared.request.image.data is None
    assert prepared.request.image.source == request.image.source and prepared.request.image.size == (640, 480)
    assert prepared.request.has_image and prepared.encoded.image.compact.nbytes == 84 * 112 * 3  # 2x2 grid of 56-px tiles

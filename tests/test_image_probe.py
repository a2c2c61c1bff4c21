"""Images are checked from their headers before any pixel is decoded (issue 19, items 1 and 3).

probe_image applies every limit that needs no pixels and keeps the bytes; decode_image gives the
pixels; each architecture's image_tokens_for gives the token cost from the size alone, equal to the
encoded image's cost, so the context check runs before decoding.
"""

from __future__ import annotations

import gc
import io
import json
import sys
import time
from pathlib import Path

import pytest
from PIL import Image, ImageFile

sys.path.insert(0, str(Path(__file__).parent))

from guardedge.runtime.errors import InvalidRequest  # noqa: E402
from guardedge.runtime.images import ImageLimits, decode_bytes, decode_image, probe_image  # noqa: E402


def encoded(img: Image.Image, fmt: str = "PNG", **save) -> bytes:
    out = io.BytesIO()
    img.save(out, fmt, **save)
    return out.getvalue()


@pytest.fixture
def no_decoding(monkeypatch):
    """Fails the test if any pixel data is decoded."""
    def refuse(self):
        raise AssertionError(f"decoded {self.size}")

    monkeypatch.setattr(ImageFile.ImageFile, "load", refuse)


def test_probe_reads_the_header_only(no_decoding):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated: the model sees 10x20
    image = probe_image(encoded(Image.new("RGB", (20, 10)), "JPEG", exif=exif), "f", "data", ImageLimits())
    assert (image.format, image.width, image.height, image.orientation, image.frames) == ("JPEG", 10, 20, 6, 1)
    assert image.image is None and image.data is not None and image.size == (10, 20)


def test_decode_gives_the_pixels_and_drops_the_bytes():
    exif = Image.Exif()
    exif[0x0112] = 6
    image = decode_image(probe_image(encoded(Image.new("RGB", (20, 10)), "JPEG", exif=exif), "f", "data", ImageLimits()))
    assert image.image.size == (10, 20) and image.image.mode == "RGB" and image.data is None


@pytest.mark.parametrize("size", [(1, 36_000_000 // 8), (36_000_000 // 8, 1), (5000, 20), (20, 5000)])
def test_extreme_aspect_ratios_are_refused_before_decoding(size, no_decoding):
    # A 1 x 36,000,000 PNG (within the pixel cap) cost 5.8 s of a preprocess thread and 1.5 GB.
    data = encoded(Image.new("1", size))
    started = time.perf_counter()
    with pytest.raises(InvalidRequest, match="aspect ratio") as info:
        probe_image(data, "messages[0].content[0].bytes", "bytes", ImageLimits())
    assert time.perf_counter() - started < 1.0
    [v] = info.value.violations
    assert v.field == "messages[0].content[0].bytes" and "the limit is 200:1" in v.description


def test_an_aspect_ratio_at_the_limit_is_accepted():
    image = probe_image(encoded(Image.new("RGB", (2000, 10))), "f", "data", ImageLimits())
    assert image.size == (2000, 10)
    assert decode_image(image).image.size == (2000, 10)


def test_a_gif_of_many_frames_is_counted_only_so_far():
    # Counting every frame of a 20 MiB GIF of 1-pixel frames (1.2 M of them) took seconds of a thread.
    from guardedge.runtime.images import MAX_FRAMES_COUNTED

    frames = [Image.new("P", (1, 1), i % 256) for i in range(3 * MAX_FRAMES_COUNTED)]
    data = encoded(frames[0], "GIF", save_all=True, append_images=frames[1:], optimize=False, disposal=0)
    image = probe_image(data, "f", "data", ImageLimits())
    assert image.frames == MAX_FRAMES_COUNTED + 1 and f"more than {MAX_FRAMES_COUNTED} frames" in image.source
    two = probe_image(encoded(frames[0], "GIF", save_all=True, append_images=frames[1:2], optimize=False, disposal=0),
                      "f", "data", ImageLimits())
    assert two.frames == 2 and "2 frames (first classified)" in two.source
    assert decode_image(image).image.size == (1, 1)


def test_decode_bytes_bounds_what_decoding_holds():
    opaque = probe_image(encoded(Image.new("RGB", (100, 50))), "f", "data", ImageLimits())
    clear = probe_image(encoded(Image.new("RGBA", (100, 50))), "f", "data", ImageLimits())
    assert decode_bytes(opaque) == 100 * 50 * 4 * 2 and decode_bytes(clear) == 100 * 50 * 4 * 4


def test_a_failed_decode_leaves_no_pixels_behind():
    """The error of a truncated image holds no decoded pixels (no traceback frame, no cycle)."""
    good = encoded(Image.effect_noise((1234, 567), 64).convert("RGB"), "PNG")
    image = probe_image(good[: len(good) // 2], "f", "data", ImageLimits())
    gc.collect()
    gc.disable()
    try:
        with pytest.raises(InvalidRequest, match="truncated or corrupt") as info:
            decode_image(image)
        assert info.value.__context__ is None and info.value.__cause__ is None
        # type(o).__mro__, not isinstance: some objects (torch's deprecated ones) warn when asked.
        alive = [o for o in gc.get_objects() if Image.Image in type(o).__mro__ and o.size == (1234, 567)]
        assert alive == []
    finally:
        gc.enable()


# -- the image-token cost from the size alone ---------------------------------------------------

SIZES = [(1, 1), (7, 300), (300, 7), (28, 28), (29, 27), (40, 30), (90, 20), (200, 300), (640, 480), (1111, 333)]


class _Tokenizer:
    pad_token_id = 0

    def convert_tokens_to_ids(self, token):
        return 5


def _assert_equal_costs(arch, sizes=SIZES) -> None:
    for width, height in sizes:
        cost = arch.image_tokens(arch.encode_image(Image.new("RGB", (width, height), (90, 20, 200))))
        assert arch.image_tokens_for(width, height) == cost, (width, height)


@pytest.mark.parametrize("fast", [True, False])
def test_mllama_image_tokens_for_equals_the_encoded_cost(fast):
    from transformers import MllamaImageProcessor

    from guardedge.runtime.architectures.mllama import Mllama

    processor = MllamaImageProcessor(size={"height": 56, "width": 56}, max_image_tiles=4)
    _assert_equal_costs(Mllama(None, {}, _Tokenizer(), image_processor=processor, fast_pixels=fast))


@pytest.mark.parametrize("fast", [True, False])
def test_llava_onevision_image_tokens_for_equals_the_encoded_cost(llava_tiny_dir, fast):
    from guardedge.runtime.architectures.llava_onevision import LlavaOneVision

    config = json.loads((llava_tiny_dir / "config.json").read_text())
    _assert_equal_costs(LlavaOneVision(llava_tiny_dir, config, _Tokenizer(), fast_pixels=fast))


def test_llava_onevision_image_tokens_for_at_the_real_configuration():
    from transformers import LlavaOnevisionImageProcessor

    from guardedge.runtime.architectures.llava_onevision import LlavaOneVision

    arch = LlavaOneVision(None, {}, _Tokenizer(), image_processor=LlavaOnevisionImageProcessor(),
                          processor_config={"num_image_tokens": 729, "vision_aspect_ratio": "anyres_max_9"})
    _assert_equal_costs(arch, [(1, 1), (384, 384), (1024, 899), (1920, 1080), (200, 3000), (4000, 3000)])
    assert arch.image_tokens_for(1920, 1080) == 7269  # REFERENCE's count (tests/test_architectures.py)


def test_llava15_image_tokens_for_equals_the_encoded_cost(tmp_path):
    import llava_tiny
    from transformers import CLIPImageProcessor

    from guardedge.runtime.architectures.llava import Llava

    path = llava_tiny.build_llava15(tmp_path / "llava15")
    config = json.loads((path / "config.json").read_text())
    _assert_equal_costs(Llava(path, config, _Tokenizer()))
    # Without the centre crop the view follows the image's shape (shortest edge resized).
    uncropped = CLIPImageProcessor(size={"shortest_edge": 28}, do_center_crop=False)
    _assert_equal_costs(Llava(path, config, _Tokenizer(), image_processor=uncropped), [(28, 28), (56, 28), (29, 70), (100, 31)])

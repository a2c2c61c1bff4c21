"""Check a request image from its header, then decode it: formats, size caps, bombs, EXIF, alpha.

Two steps, so that every limit that needs no pixels is applied before any pixel is decoded:

    image = probe_image(data, field, source, limits, formats)   # header only: an ImageInput without pixels
    ...                                                          # family rules, policy, token cost, context
    image = decode_image(image)                                  # RGB pixels, bytes dropped

Policy (documented in README "Input rules"):
- Allowed formats: PNG, JPEG, WEBP, GIF, BMP (decoded by Pillow). Anything else is refused.
- From the header, before decoding: the byte cap (default 20 MiB), the pixel cap (36 Mpx), the
  smallest side, the aspect ratio (at most 200:1; Pillow's resize works in proportion to an
  image's longest side, so a 1 x 36,000,000 PNG of 70 KB cost 5.8 s and 1.5 GB on its way to a
  560-px tile) and the bytes decoding would hold (``decode_bytes``), so a decompression bomb
  never allocates.
- Progressive JPEG: decoding costs about pixels x scans, and a 270 KB file can carry 20 000
  scans over 36 Mpx (48 s of uninterruptible decoding). So scans are counted from the bytes
  before decoding: at most MAX_JPEG_SCANS, and pixels x scans at most max_pixels x
  JPEG_SCAN_BUDGET (a 36 Mpx image with the usual 10 scans passes). A small file that claims
  a large image (5 KB for 6000x6000) is decoded, not refused: flat images compress that well,
  and its cost is bounded by the pixel cap like any other.
- EXIF orientation is applied (phones store rotated pixels). It is read from the header (EXIF,
  or XMP's tiff:Orientation, as Pillow's ``exif_transpose`` reads them); a PNG's eXIf chunk
  after the image data, which the PNG specification places before it, is not read.
- Transparency is flattened onto mid-grey (128,128,128) rather than dropped: dropping alpha
  shows whatever colour the hidden pixels carry, white hides white strokes and black hides
  black ones; grey hides neither, so a transparent layer cannot hide content from the model.
- Animated images (GIF/WEBP/APNG): the first frame is classified; the frame count is reported
  in the source description so callers know. A caller who needs every frame sends each frame.
  WEBP and APNG say their count in the header; a GIF's is found by stepping over every frame, so
  it is counted up to MAX_FRAMES_COUNTED (counting 20,000 1-pixel frames took 0.12 s on the 2-core
  CI machine, and a 20 MiB GIF holds 1.2 M such frames of 17 bytes: work for a number only reported).

Errors name the field and the limit. A failed decode raises an error that holds no pixels: no
traceback frame of it refers to a decoded image (tests/test_service_memory.py).
"""

from __future__ import annotations

import base64
import binascii
import io
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

from guardedge.runtime.errors import invalid
from guardedge.runtime.types import ImageInput

ALLOWED_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP")
MIME_TYPES = {"image/png": "PNG", "image/jpeg": "JPEG", "image/webp": "WEBP", "image/gif": "GIF", "image/bmp": "BMP"}
FLATTEN_BACKGROUND = (128, 128, 128)
MAX_JPEG_SCANS = 64  # encoders' progressive scripts use 6-12 scans; mozjpeg's optimised ones stay under 20
JPEG_SCAN_BUDGET = 16  # pixels x scans <= max_pixels x this
MAX_ASPECT_RATIO = 200.0  # Qwen2-VL's processor refuses beyond 200:1 too; panoramas and long screenshots stay far below
MAX_FRAMES_COUNTED = 1000
# EXIF orientations that swap width and height (transpose, rotations by 90 degrees).
_SWAPS = {5, 6, 7, 8}


@dataclass(frozen=True)
class ImageLimits:
    max_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 36_000_000
    min_side: int = 1
    max_aspect_ratio: float = MAX_ASPECT_RATIO  # longest side / shortest side


def decode_base64(data: str, field: str) -> bytes:
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise invalid(field, f"'data' is not valid base64 ({exc})") from None


def formats_for_mime(mime_type: str | None, field: str) -> tuple[str, ...]:
    """The formats an image may have: the one its declared MIME type names, or any allowed."""
    if not mime_type:
        return ALLOWED_FORMATS
    try:
        return (MIME_TYPES[mime_type.lower()],)
    except KeyError:
        raise invalid(field, f"{mime_type!r} is not supported; use one of {', '.join(MIME_TYPES)}") from None


def read_path(path: str, field: str, limits: ImageLimits) -> bytes:
    p = Path(path)
    if not p.is_file():
        raise invalid(field, f"image file {path!r} does not exist")
    size = p.stat().st_size
    if size > limits.max_bytes:
        raise invalid(field, f"image file is {size} bytes; the limit is {limits.max_bytes}")
    return p.read_bytes()


def decode_bytes(image: ImageInput) -> int:
    """Bytes decoding this image holds at its peak, from its header: an upper bound.

    Pillow keeps at most 4 bytes per pixel. The decoded image and one more (its orientation applied,
    or its conversion to RGB) exist at once; flattening transparency holds the decoded image, the
    grey background, their composite and its RGB copy. Admission counts it before decoding
    (runtime/service/admission.py).
    """
    return image.width * image.height * 4 * (4 if image.transparent else 2)


def peek_decode_bytes(data: bytes) -> int:
    """``decode_bytes`` from the first header bytes alone, for admission on arrival (microseconds: no
    EXIF, frame count or scan count); 0 when the header cannot be read (``probe_image`` then refuses
    the image, naming why)."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS) as img:
                width, height = img.size
                return decode_bytes(ImageInput(width=width, height=height, transparent=_transparent(img)))
    except Exception:  # noqa: BLE001 - any unreadable header costs nothing to admit; the probe says why
        return 0


def probe_image(data: bytes, field: str, source: str, limits: ImageLimits,
                formats: tuple[str, ...] = ALLOWED_FORMATS) -> ImageInput:
    """Every check that needs no pixels, from the header; the ImageInput keeps the bytes, no pixels.

    ``width``/``height`` are the image as the model will see it (after EXIF orientation).
    """
    if not data:
        raise invalid(field, "image is empty (0 bytes)")
    if len(data) > limits.max_bytes:
        raise invalid(field, f"image is {len(data)} bytes; the limit is {limits.max_bytes}")
    header, problem = _read_header(data, formats)
    if problem:
        raise invalid(field, problem)
    assert header is not None, "_read_header gives a header whenever it finds no problem"
    fmt, mode, (width, height), frames, orientation, transparent = header
    _check_size(width, height, field, limits)
    if fmt == "JPEG":
        _check_jpeg_scans(data, (width, height), field, limits)
    if orientation in _SWAPS:
        width, height = height, width
    count = f"more than {MAX_FRAMES_COUNTED}" if frames > MAX_FRAMES_COUNTED else str(frames)
    suffix = f", {count} frames (first classified)" if frames > 1 else ""
    return ImageInput(None, f"{source}{suffix}", data=data, format=fmt, mode=mode, width=width, height=height,
                      frames=frames, orientation=orientation, transparent=transparent, where=field)


def decode_image(image: ImageInput) -> ImageInput:
    """The RGB pixels of a probed image (orientation applied, alpha flattened); the bytes dropped.

    An image that already has its pixels is returned as it is. Raises InvalidRequest (truncated or
    corrupt data) without a traceback that holds any pixels.
    """
    if image.image is not None:
        return image
    if image.data is None:
        raise ValueError(f"{image.source}: the image was neither probed nor decoded")
    rgb, problem = _decode(image)
    if problem:  # raised here, outside any except block: no context chain back to the decoder's frames
        raise invalid(image.where or "image", problem)
    return replace(image, image=rgb, data=None)


def load_image(data: bytes, field: str, source: str, limits: ImageLimits, formats: tuple[str, ...] = ALLOWED_FORMATS) -> ImageInput:
    """Probe and decode in one go (benches, tests and callers that want the pixels at once)."""
    return decode_image(probe_image(data, field, source, limits, formats))


# ---- header ------------------------------------------------------------------------------------


def _read_header(data: bytes, formats: tuple[str, ...]) -> tuple[tuple | None, str]:
    """(format, mode, size, frames, orientation, transparent), or None and what is wrong."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=formats) as img:
                frames = _frames(img)
                # Image.getexif reads what the header holds; PNG's override would decode the pixels to
                # look for an eXIf chunk after them.
                orientation = Image.Image.getexif(img).get(0x0112, 1)
                return (img.format, img.mode, img.size, frames, orientation if orientation in range(1, 9) else 1,
                        _transparent(img)), ""
    except UnidentifiedImageError:
        if formats != ALLOWED_FORMATS:
            return None, f"not a readable {'/'.join(formats)} image (the declared mime_type)"
        return None, f"not a readable image; allowed formats: {', '.join(ALLOWED_FORMATS)}"
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        return None, f"image is too large to decode safely ({exc})"
    except (OSError, SyntaxError, ValueError, EOFError, TypeError) as exc:
        return None, f"image is truncated or corrupt ({exc})"


def _frames(img) -> int:
    """The frame count; for a GIF at most MAX_FRAMES_COUNTED + 1 (meaning: more)."""
    if img.format != "GIF":
        return getattr(img, "n_frames", 1)
    count = 1
    try:
        while count <= MAX_FRAMES_COUNTED:
            img._seek(count, False)  # what Pillow's own n_frames does: the next frame's headers, no pixels
            count += 1
    except EOFError:
        pass
    return count


def _transparent(img) -> bool:
    return img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info


def _check_size(width: int, height: int, field: str, limits: ImageLimits) -> None:
    if width < limits.min_side or height < limits.min_side:
        raise invalid(field, f"image is {width}x{height}; both sides must be at least {limits.min_side}")
    if width * height > limits.max_pixels:
        raise invalid(field, f"image is {width}x{height} = {width * height} pixels; the limit is {limits.max_pixels}")
    ratio = max(width, height) / min(width, height)
    if ratio > limits.max_aspect_ratio:
        raise invalid(field, f"image is {width}x{height}, an aspect ratio of {ratio:.1f}:1; the limit is "
                      f"{limits.max_aspect_ratio:g}:1 (resizing costs work in proportion to the longest side)")


def _check_jpeg_scans(data: bytes, size: tuple[int, int], field: str, limits: ImageLimits) -> None:
    # A start-of-scan marker (FF DA) cannot occur inside entropy-coded data (an FF there is
    # followed by 00 or a restart marker), so counting it over-counts only when metadata happens
    # to contain those bytes: the check errs toward refusing, never toward decoding a bomb.
    scans = data.count(b"\xff\xda")
    pixels = size[0] * size[1]
    if scans > MAX_JPEG_SCANS:
        raise invalid(field, f"JPEG has {scans} scans; the limit is {MAX_JPEG_SCANS} (decoding cost grows with every scan)")
    if pixels * scans > limits.max_pixels * JPEG_SCAN_BUDGET:
        raise invalid(field, f"JPEG of {pixels} pixels in {scans} scans would cost too much to decode; "
                      f"pixels x scans is limited to {limits.max_pixels * JPEG_SCAN_BUDGET}")


# ---- pixels ------------------------------------------------------------------------------------


def _decode(image: ImageInput):
    """(RGB PIL image, "") or (None, what is wrong). Nothing decoded outlives a failure: the
    exception, its traceback and the frames holding partial pixels are gone when this returns."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return _pixels(image), ""
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        return None, f"image is too large to decode safely ({exc})"
    except (OSError, SyntaxError, ValueError, EOFError, TypeError) as exc:
        return None, f"image is truncated or corrupt ({exc})"


def _pixels(image: ImageInput):
    from PIL import Image

    assert image.data is not None, "decode_image() checked it"
    with Image.open(io.BytesIO(image.data), formats=(image.format,)) as img:
        img.load()
        oriented = _orient(img, image.orientation)
    rgb = _to_rgb(oriented)
    del img, oriented  # the decoded original is dropped as soon as its RGB form exists
    if rgb.size != (image.width, image.height):  # the header said otherwise: refuse, never guess
        raise ValueError(f"decoded {rgb.size[0]}x{rgb.size[1]}, the header said {image.width}x{image.height}")
    return rgb


def _orient(img, orientation: int):
    """The image turned as EXIF ``orientation`` says (Pillow's exif_transpose table), without a copy at 1."""
    from PIL import Image

    method = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
              5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
              8: Image.Transpose.ROTATE_90}.get(orientation)
    return img if method is None else img.transpose(method)


def _to_rgb(img):
    from PIL import Image

    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img if img.mode == "RGBA" else img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, FLATTEN_BACKGROUND + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img if img.mode == "RGB" else img.convert("RGB")  # RGB already: no copy

"""Decode and check one request image: formats, size caps, decompression bombs, EXIF, alpha.

Policy (documented in README "Input rules"):
- Allowed formats: PNG, JPEG, WEBP, GIF, BMP (decoded by Pillow). Anything else is refused.
- Byte cap (default 20 MiB) before decoding; pixel cap (default 36 Mpx) checked from the header,
  before pixels are decoded, so a decompression bomb never allocates.
- Progressive JPEG: decoding costs about pixels x scans, and a 270 KB file can carry 20 000
  scans over 36 Mpx (48 s of uninterruptible decoding). So scans are counted from the bytes
  before decoding: at most MAX_JPEG_SCANS, and pixels x scans at most max_pixels x
  JPEG_SCAN_BUDGET (a 36 Mpx image with the usual 10 scans passes). A small file that claims
  a large image (5 KB for 6000x6000) is decoded, not refused: flat images compress that well,
  and its cost is bounded by the pixel cap like any other.
- EXIF orientation is applied (phones store rotated pixels).
- Transparency is flattened onto mid-grey (128,128,128) rather than dropped: dropping alpha
  shows whatever colour the hidden pixels carry, white hides white strokes and black hides
  black ones; grey hides neither, so a transparent layer cannot hide content from the model.
- Animated images (GIF/WEBP/APNG): the first frame is classified; the frame count is reported
  in the source description so callers know. A caller who needs every frame sends each frame.
"""

from __future__ import annotations

import base64
import binascii
import io
import warnings
from dataclasses import dataclass
from pathlib import Path

from guardedge.runtime.errors import InvalidRequest, invalid
from guardedge.runtime.types import ImageInput

ALLOWED_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP")
MIME_TYPES = {"image/png": "PNG", "image/jpeg": "JPEG", "image/webp": "WEBP", "image/gif": "GIF", "image/bmp": "BMP"}
FLATTEN_BACKGROUND = (128, 128, 128)
MAX_JPEG_SCANS = 64  # encoders' progressive scripts use 6-12 scans; mozjpeg's optimised ones stay under 20
JPEG_SCAN_BUDGET = 16  # pixels x scans <= max_pixels x this


@dataclass(frozen=True)
class ImageLimits:
    max_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 36_000_000
    min_side: int = 1


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


def load_image(data: bytes, field: str, source: str, limits: ImageLimits, formats: tuple[str, ...] = ALLOWED_FORMATS) -> ImageInput:
    """Validate and decode image bytes (of one of ``formats``) into an RGB PIL image."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    if not data:
        raise invalid(field, "image is empty (0 bytes)")
    if len(data) > limits.max_bytes:
        raise invalid(field, f"image is {len(data)} bytes; the limit is {limits.max_bytes}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=formats)
            _check_header(img, field, limits)
            if img.format == "JPEG":
                _check_jpeg_scans(data, img.size, field, limits)
            img.load()
            frames = getattr(img, "n_frames", 1)
            img = ImageOps.exif_transpose(img)
            rgb = _to_rgb(img)
    except InvalidRequest:
        raise  # our own limit checks, already precise
    except UnidentifiedImageError:
        if formats != ALLOWED_FORMATS:
            raise invalid(field, f"not a readable {'/'.join(formats)} image (the declared mime_type)") from None
        raise invalid(field, f"not a readable image; allowed formats: {', '.join(ALLOWED_FORMATS)}") from None
    except Image.DecompressionBombError as exc:
        raise invalid(field, f"image is too large to decode safely ({exc})") from None
    except Image.DecompressionBombWarning as exc:
        raise invalid(field, f"image is too large to decode safely ({exc})") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise invalid(field, f"image is truncated or corrupt ({exc})") from None
    suffix = f", {frames} frames (first classified)" if frames > 1 else ""
    return ImageInput(rgb, f"{source}{suffix}")


def _check_header(img, field: str, limits: ImageLimits) -> None:
    width, height = img.size
    if width < limits.min_side or height < limits.min_side:
        raise invalid(field, f"image is {width}x{height}; both sides must be at least {limits.min_side}")
    if width * height > limits.max_pixels:
        raise invalid(field, f"image is {width}x{height} = {width * height} pixels; the limit is {limits.max_pixels}")


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


def _to_rgb(img):
    from PIL import Image

    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, FLATTEN_BACKGROUND + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")

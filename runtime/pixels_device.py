"""Optional: decode a JPEG and make its Mllama tiles on the GPU (off by default; needs torchvision).

    from guardedge.runtime.pixels_device import device_pixel_values
    values, ratio_id, num_tiles = device_pixel_values(jpeg_bytes, config, "cuda")

torchvision is not a dependency: it is imported inside ``decode_jpeg`` only, so importing the
runtime never needs it (nor CUDA). The steps after decoding are the CPU path's
(runtime/pixels.py): the same grid and size (``plan``), then ``write_canvas``, the same float
math, on the device. What differs, and why this is an option and not the default:

- decoding: nvJPEG's IDCT and chroma upsampling are not libjpeg-turbo's, so pixel values can
  differ by a few levels from Pillow's decode;
- resizing: ``torch.nn.functional.interpolate(bilinear, antialias=True)`` uses the same
  triangle filter as PIL's BILINEAR but in float, where PIL uses 22-bit fixed-point weights and
  rounds between its horizontal and vertical passes; results differ by one level at some pixels.

So its output is close to, not equal to, the processor's: ``guardedge bench preprocess --device
cuda`` reports the deviation and ``guardedge bench drift`` the verdict drift. Its timing needs a
GPU machine. Validation (size caps, scan counts) still happens on the CPU from the header
(runtime/images.py) before this runs; EXIF orientation is applied by the decoder.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from guardedge.runtime.pixels import TileConfig, aspect_ratios, plan, write_canvas


def available() -> bool:
    """Whether torchvision can be imported and a CUDA device is present."""
    try:
        import torchvision  # noqa: F401
    except ImportError:
        return False
    return torch.cuda.is_available()


def decode_jpeg(data: bytes, device: str | torch.device) -> torch.Tensor:
    """uint8 [3, H, W] RGB on ``device`` (nvJPEG on CUDA), EXIF orientation applied."""
    try:
        from torchvision.io import ImageReadMode
        from torchvision.io import decode_jpeg as _decode
    except ImportError:
        raise RuntimeError("decoding on the device needs torchvision (pip install torchvision matching torch)") from None
    raw = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    return _decode(raw, mode=ImageReadMode.RGB, device=device, apply_exif_orientation=True)


def resize_bilinear(chw: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """uint8 [3, H, W] -> uint8 [3, height, width], antialiased bilinear (PIL's filter, in float)."""
    x = F.interpolate(chw[None].float(), size=(height, width), mode="bilinear", antialias=True, align_corners=False)
    return x[0].round_().clamp_(0, 255).to(torch.uint8)


def tiles_from_chw(chw: torch.Tensor, config: TileConfig, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, int, int]:
    """(pixel_values [max_tiles, 3, T, T] on chw's device, aspect_ratio_id, num_tiles) for a decoded image."""
    grid, (new_h, new_w) = plan(chw.shape[1], chw.shape[2], config.tile, config.max_tiles)
    resized = resize_bilinear(chw, new_h, new_w)
    out = torch.empty((config.max_tiles, 3, config.tile, config.tile), dtype=dtype, device=chw.device)
    write_canvas(resized.permute(1, 2, 0), grid, config, out)
    return out, aspect_ratios(config.max_tiles).index(grid) + 1, grid[0] * grid[1]


def device_pixel_values(data: bytes, config: TileConfig, device: str | torch.device = "cuda",
                        dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, int, int]:
    """Decode ``data`` (a JPEG) on ``device`` and return its tiles there; see the module docstring."""
    return tiles_from_chw(decode_jpeg(data, device), config, dtype)

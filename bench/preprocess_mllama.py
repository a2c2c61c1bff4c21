"""``guardedge bench preprocess --arch mllama``: runtime/pixels.py against MllamaImageProcessor, same images, same run.

Per image, on one thread by default, interleaving the paths in every repeat (bench/preprocess.py):
- ``decode``: runtime/images.py as the engine runs it (checks, decode, EXIF, RGB);
- ``transformers``: the slow MllamaImageProcessor (what the model card runs) on the decoded image;
- ``compact``: ``pixels.compact`` (one resize, uint8): what a request pays before it queues;
- ``compact+float``: that plus ``pixels.pixel_values`` (what collate adds): the full fast path;
- ``device`` (with --device cuda and torchvision): nvJPEG decode + the same math on the GPU,
  from the encoded bytes, so it includes decoding; its deviation from the CPU path is reported.
It checks that compact+float equals transformers bit for bit, and reports bytes per queued
request: compact pixels against the float32 tiles and the decoded image. The default
configuration is the real one (560-px tiles, at most 4, CLIP mean/std).
"""

from __future__ import annotations

import argparse

from guardedge.bench.preprocess_common import interleaved, percentiles, print_rows

CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
PATHS = ("decode", "transformers", "compact", "compact+float")


def processor(tile: int, max_tiles: int):
    from transformers import MllamaImageProcessor

    return MllamaImageProcessor(size={"height": tile, "width": tile}, max_image_tiles=max_tiles, image_mean=CLIP_MEAN, image_std=CLIP_STD)


def _paths(data: bytes, proc, config, device: str) -> dict:
    from guardedge.runtime import pixels
    from guardedge.runtime.images import ImageLimits, load_image

    image = load_image(data, "image", "bench", ImageLimits()).image
    paths = {
        "decode": lambda: load_image(data, "image", "bench", ImageLimits()),
        "transformers": lambda: proc(images=[[image]], return_tensors="pt"),
        "compact": lambda: pixels.compact(image, config),
        "compact+float": lambda: pixels.pixel_values([pixels.compact(image, config)], config),
    }
    if device != "cpu":
        from guardedge.runtime.pixels_device import device_pixel_values

        paths["device"] = lambda: _synced(device, lambda: device_pixel_values(data, config, device))
    return paths


def _synced(device: str, fn):
    import torch

    out = fn()
    torch.cuda.synchronize(device)
    return out


def measure_image(name: str, data: bytes, proc, config, repeats: int, warmup: int, device: str) -> dict:
    """Timings per path (interleaved), exactness, and the bytes a queued request holds for this image."""
    import torch

    from guardedge.runtime import pixels

    paths = _paths(data, proc, config, device)
    ref = paths["transformers"]()["pixel_values"][0, 0]
    fast = paths["compact+float"]()[0, 0]
    compact = paths["compact"]()
    width, height = paths["decode"]().image.size
    times = interleaved(paths, warmup, repeats)
    row = {"image": name, "size": f"{width}x{height}", "bytes": len(data), "grid": list(compact.grid),
           "exact": bool(torch.equal(fast, ref)), "max_abs_diff": float((fast - ref).abs().max()),
           "timings": {k: percentiles(v) for k, v in times.items()},
           "queued_bytes": {"compact": compact.nbytes, "float32_tiles": config.max_tiles * 3 * config.tile**2 * 4,
                            "decoded_image": width * height * 4}}  # Pillow keeps RGB in 4 bytes per pixel
    t = row["timings"]
    row["speedup"] = {k: round(t["transformers"]["p50_ms"] / t[k]["p50_ms"], 2) for k in paths if k not in ("decode", "transformers")}
    if "device" in paths:
        on_device = pixels.pixel_values([compact], config)[0, 0]
        row["device_max_abs_diff"] = float((paths["device"]()[0].cpu() - on_device).abs().max())
    return row


def print_table(report: dict) -> None:
    names = [p for p in PATHS + ("device",) if any(p in r["timings"] for r in report["images"])]
    print(f"bench preprocess: {report['machine']}; tiles {report['tile']} px, at most {report['max_tiles']}")
    print_rows(report, names, "tiles")


def run(args: argparse.Namespace, images: dict[str, bytes]) -> dict:
    """The report for ``images`` (560-px tiles unless ``--tile``)."""
    from guardedge.runtime import pixels

    tile = args.tile or 560
    proc = processor(tile, args.max_tiles)
    config, why = pixels.config_from_processor(proc)
    if config is None:
        raise SystemExit(f"the fast path does not cover this configuration: {why}")
    if args.device != "cpu":
        from guardedge.runtime.pixels_device import available

        if not available():
            raise SystemExit("--device needs torchvision and a CUDA device")
    rows = [measure_image(name, data, proc, config, args.repeats, args.warmup, args.device) for name, data in images.items()]
    return {"bench": "preprocess", "arch": "mllama", "tile": tile, "max_tiles": args.max_tiles,
            "repeats": args.repeats, "device": args.device, "images": rows}

"""``guardedge bench preprocess``: the fast exact image paths against transformers' processors, same images, same run.

    guardedge bench preprocess [--arch mllama|llava_onevision] [--sizes 640x480,1280x720,1920x1080,4000x3000]
        [--image FILE ...] [--format jpeg|png] [--tile 560] [--max-tiles 4] [--repeats 20] [--warmup 3]
        [--threads 1] [--device cuda] [--plot preprocess.png]

``--arch mllama`` (the default): runtime/pixels.py against MllamaImageProcessor, as below.
``--arch llava_onevision``: runtime/pixels_onevision.py against LlavaOnevisionImageProcessor
(bench/preprocess_onevision.py; same paths, CPU only, 384-px patches unless ``--tile``).

Per image (generated photo-like images at each size, plus any --image), on one thread by default,
interleaving the paths in every repeat so load on the machine hits them alike:
- ``decode``: runtime/images.py as the engine runs it (checks, decode, EXIF, RGB);
- ``transformers``: the slow MllamaImageProcessor (what the model card runs) on the decoded image;
- ``compact``: ``pixels.compact`` (one resize, uint8): what a request pays before it queues;
- ``compact+float``: that plus ``pixels.pixel_values`` (what collate adds): the full fast path;
- ``device`` (with --device cuda and torchvision): nvJPEG decode + the same math on the GPU,
  from the encoded bytes, so it includes decoding; its deviation from the CPU path is reported.
It checks that compact+float equals transformers bit for bit, and reports bytes per queued
request: compact pixels against the float32 tiles and the decoded image. Human table first, one
JSON line last. The default configuration is the real one (560-px tiles, at most 4, CLIP mean/std).
"""

from __future__ import annotations

import argparse
import io
import json
import platform
from pathlib import Path

from guardedge.bench.preprocess_common import interleaved, percentiles, print_rows

CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
PATHS = ("decode", "transformers", "compact", "compact+float")


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sizes", default="640x480,1280x720,1920x1080,4000x3000", help="generated images, WxH comma-separated ('' for none)")
    parser.add_argument("--image", action="append", default=[], help="an image file to include (repeatable)")
    parser.add_argument("--format", choices=("jpeg", "png"), default="jpeg", help="encoding of the generated images")
    parser.add_argument("--arch", choices=("mllama", "llava_onevision"), default="mllama", help="which architecture's processor to compare with")
    parser.add_argument("--tile", type=int, default=None, help="tile size (mllama: 560, the demo guard 56; llava_onevision: 384, the demo LlavaGuard 28)")
    parser.add_argument("--max-tiles", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (PIL and numpy run on one anyway)")
    parser.add_argument("--device", default="cpu", help="'cuda' adds the GPU decode path (needs torchvision)")
    parser.add_argument("--plot", help="write a PNG of p50 per size and path")


def photo_like(width: int, height: int, fmt: str, seed: int = 0) -> bytes:
    """Smooth shapes plus sensor-like noise: compresses like a photo (about 1 MB at 1080p JPEG q90)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = [127 + 100 * np.sin(x / (37 + 13 * c) + y / (53 - 7 * c) + c) for c in range(3)]
    pixels = np.stack(base, -1) + rng.normal(0, 12, (height, width, 3))
    out = io.BytesIO()
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
    image.save(out, format=fmt.upper(), **({"quality": 90} if fmt == "jpeg" else {}))
    return out.getvalue()


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


def images(args: argparse.Namespace) -> dict[str, bytes]:
    out = {}
    for i, spec in enumerate(s for s in args.sizes.split(",") if s.strip()):
        width, height = (int(v) for v in spec.lower().split("x"))
        out[f"{spec} {args.format}"] = photo_like(width, height, args.format, seed=i)
    for path in args.image:
        out[Path(path).name] = Path(path).read_bytes()
    return out


def machine() -> str:
    import os

    import torch

    return f"{platform.machine()} {platform.processor() or platform.system()} {os.cpu_count()} cpus, {torch.get_num_threads()} torch threads".strip()


def print_table(report: dict) -> None:
    names = [p for p in PATHS + ("device",) if any(p in r["timings"] for r in report["images"])]
    print(f"bench preprocess: {report['machine']}; tiles {report['tile']} px, at most {report['max_tiles']}")
    print_rows(report, names, "tiles")


def main(args: argparse.Namespace) -> int:
    import torch

    from guardedge.runtime import pixels

    torch.set_num_threads(args.threads)
    if args.arch == "llava_onevision":
        return _main_onevision(args)
    args.tile = args.tile or 560
    proc = processor(args.tile, args.max_tiles)
    config, why = pixels.config_from_processor(proc)
    if config is None:
        raise SystemExit(f"the fast path does not cover this configuration: {why}")
    if args.device != "cpu":
        from guardedge.runtime.pixels_device import available

        if not available():
            raise SystemExit("--device needs torchvision and a CUDA device")
    rows = [measure_image(name, data, proc, config, args.repeats, args.warmup, args.device) for name, data in images(args).items()]
    report = {"bench": "preprocess", "machine": machine(), "tile": args.tile, "max_tiles": args.max_tiles,
              "repeats": args.repeats, "device": args.device, "images": rows}
    print_table(report)
    if args.plot:
        from guardedge.bench.plots import preprocess as plot

        plot(report, args.plot)
    print(json.dumps(report))
    return 0 if all(r["exact"] for r in rows) else 1


def _main_onevision(args: argparse.Namespace) -> int:
    from guardedge.bench import preprocess_onevision

    if args.device != "cpu":
        raise SystemExit("--device is for --arch mllama only")
    report = {**preprocess_onevision.run(args, images(args)), "machine": machine()}
    preprocess_onevision.print_table(report)
    if args.plot:
        from guardedge.bench.plots import preprocess as plot

        plot(report, args.plot)
    print(json.dumps(report))
    return 0 if all(r["exact"] for r in report["images"]) else 1

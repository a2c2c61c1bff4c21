"""``guardedge bench preprocess``: the fast exact image paths against transformers' processors, same images, same run.

    guardedge bench preprocess [--arch MODEL_TYPE] [--sizes 640x480,1280x720,1920x1080,4000x3000]
        [--image FILE ...] [--format jpeg|png] [--tile 560] [--max-tiles 4] [--repeats 20] [--warmup 3]
        [--threads 1] [--device cuda] [--plot preprocess.png]

Each architecture's comparison is a module registered under pyproject.toml's
``guardedge.preprocess_benches`` entry point (model_type -> module with ``run(args, images)`` and
``print_table(report)``): ``mllama`` (bench/preprocess_mllama.py: runtime/pixels.py against
MllamaImageProcessor, the default), ``llava_onevision`` (bench/preprocess_onevision.py), and any
architecture that registers one. Per image (generated photo-like images at each size, plus any
--image), on one thread by default, the paths are interleaved in every repeat so load on the
machine hits them alike; the fast path must equal transformers' bit for bit (exit 1 otherwise).
Human table first, one JSON line last.
"""

from __future__ import annotations

import argparse
import io
import json
import platform
from importlib.metadata import entry_points
from pathlib import Path

GROUP = "guardedge.preprocess_benches"


def architectures() -> tuple[str, ...]:
    return tuple(sorted(p.name for p in entry_points(group=GROUP)))


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sizes", default="640x480,1280x720,1920x1080,4000x3000", help="generated images, WxH comma-separated ('' for none)")
    parser.add_argument("--image", action="append", default=[], help="an image file to include (repeatable)")
    parser.add_argument("--format", choices=("jpeg", "png"), default="jpeg", help="encoding of the generated images")
    parser.add_argument("--arch", choices=architectures(), default="mllama", help="which architecture's processor to compare with")
    parser.add_argument("--tile", type=int, default=None, help="tile size (mllama: 560, the demo guard 56; llava_onevision: 384, the demo LlavaGuard 28)")
    parser.add_argument("--max-tiles", type=int, default=4)
    parser.add_argument("--max-pixels", type=int, help="a processor that resizes to a pixel budget (qwen2_5_vl: 12845056, the demo 50176)")
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


def main(args: argparse.Namespace) -> int:
    import torch

    torch.set_num_threads(args.threads)
    bench = next(p for p in entry_points(group=GROUP) if p.name == args.arch).load()
    report = {**bench.run(args, images(args)), "machine": machine()}
    bench.print_table(report)
    if args.plot:
        from guardedge.bench.plots import preprocess as plot

        plot(report, args.plot)
    print(json.dumps(report))
    return 0 if all(r["exact"] for r in report["images"]) else 1

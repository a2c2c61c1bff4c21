"""Qwen2.5-VL's fast exact image path against transformers' Qwen2VLImageProcessor, same images, same run.

    python -m guardedge.bench.preprocess_qwen2_5_vl [--sizes 640x480,1280x720,1920x1080] [--max-pixels 12845056]
        [--repeats 10] [--warmup 2] [--threads 1] [--format jpeg|png]

The paths, interleaved in every repeat as ``guardedge bench preprocess`` does for the other
architectures (bench/preprocess.py, whose helpers this uses):
- ``decode``: runtime/images.py as the engine runs it;
- ``transformers``: the slow Qwen2VLImageProcessor (what QwenGuard's model card runs without
  torchvision) on the decoded image, told ``input_data_format="channels_last"``;
- ``compact``: runtime/architectures/qwen2_5_vl/pixels.py ``compact`` (the processor's PIL resize,
  uint8): what a request pays before it queues;
- ``compact+float``: that plus ``pixel_values`` (what collate adds): the whole fast path.
It checks the fast path equals transformers bit for bit and reports the bytes a queued request
holds: compact pixels against the float32 patches (the frame twice) and the decoded image. The
default configuration is Qwen2.5-VL's (min 3136, max 12,845,056 pixels); ``--max-pixels 50176``
is the demo QwenGuard's. Human table first, one JSON line last.
"""

from __future__ import annotations

import argparse
import json

from guardedge.bench.preprocess import images, interleaved, machine, percentiles, print_rows

PATHS = ("decode", "transformers", "compact", "compact+float")


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sizes", default="640x480,1280x720,1920x1080", help="generated images, WxH comma-separated")
    parser.add_argument("--image", action="append", default=[], help="an image file to include (repeatable)")
    parser.add_argument("--format", choices=("jpeg", "png"), default="jpeg")
    parser.add_argument("--max-pixels", type=int, default=12845056, help="the processor's max_pixels (demo: 50176)")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (PIL and numpy run on one anyway)")


def _paths(data: bytes, proc, config) -> dict:
    from guardedge.runtime.architectures.qwen2_5_vl import pixels as qp
    from guardedge.runtime.images import ImageLimits, load_image

    image = load_image(data, "image", "bench", ImageLimits()).image
    return {
        "decode": lambda: load_image(data, "image", "bench", ImageLimits()),
        "transformers": lambda: proc(images=[image], return_tensors="pt", input_data_format="channels_last"),
        "compact": lambda: qp.compact(image, config),
        "compact+float": lambda: qp.pixel_values([qp.compact(image, config)], config),
    }


def measure_image(name: str, data: bytes, proc, config, repeats: int, warmup: int) -> dict:
    """Timings per path (interleaved), exactness, and the bytes a queued request holds for this image."""
    import torch

    paths = _paths(data, proc, config)
    ref = paths["transformers"]()["pixel_values"]
    fast = paths["compact+float"]()
    compact = paths["compact"]()
    image = paths["decode"]().image
    times = interleaved(paths, warmup, repeats)
    same_shape = fast.shape == ref.shape
    row = {"image": name, "size": f"{image.width}x{image.height}", "bytes": len(data), "grid": list(compact.grid),
           "tokens": compact.num_patches // 4, "exact": bool(same_shape and torch.equal(fast, ref)),
           "timings": {k: percentiles(v) for k, v in times.items()},
           "queued_bytes": {"compact": compact.nbytes, "float32_tiles": compact.num_patches * config.features * 4,
                            "decoded_image": image.width * image.height * 4}}  # Pillow keeps RGB in 4 bytes per pixel
    t = row["timings"]
    row["speedup"] = {k: round(t["transformers"]["p50_ms"] / t[k]["p50_ms"], 2) for k in ("compact", "compact+float")}
    return row


def main(args: argparse.Namespace | None = None) -> int:
    import torch
    from transformers import Qwen2VLImageProcessor

    from guardedge.runtime.architectures.qwen2_5_vl import pixels as qp

    if args is None:
        parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
        configure_parser(parser)
        args = parser.parse_args()
    torch.set_num_threads(args.threads)
    proc = Qwen2VLImageProcessor(min_pixels=3136, max_pixels=args.max_pixels)
    config, why = qp.config_from_processor(proc)
    if config is None:
        raise SystemExit(f"the fast path does not cover this configuration: {why}")
    rows = [measure_image(name, data, proc, config, args.repeats, args.warmup) for name, data in images(args).items()]
    report = {"bench": "preprocess", "arch": "qwen2_5_vl", "machine": machine(), "max_pixels": args.max_pixels,
              "repeats": args.repeats, "device": "cpu", "images": rows}
    print(f"bench preprocess qwen2_5_vl: {report['machine']}; max_pixels {args.max_pixels}, {args.repeats} repeats")
    print_rows(report, list(PATHS), "patches (frame x2)", extra="tokens")
    print(json.dumps(report))
    return 0 if all(r["exact"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())

"""Qwen2.5-VL's fast exact image path against transformers' Qwen2VLImageProcessor, same images, same run.

    guardedge bench preprocess --arch qwen2_5_vl [--sizes 640x480,1280x720,1920x1080] [--max-pixels 12845056]
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

from guardedge.bench.preprocess_common import interleaved, percentiles, print_rows

PATHS = ("decode", "transformers", "compact", "compact+float")


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


def run(args: argparse.Namespace, images: dict[str, bytes]) -> dict:
    """The report for ``images`` under the processor's ``--max-pixels`` (Qwen2.5-VL's 12,845,056 unless given)."""
    from transformers import Qwen2VLImageProcessor

    from guardedge.runtime.architectures.qwen2_5_vl import pixels as qp

    if args.device != "cpu":
        raise SystemExit("--device is for --arch mllama only")
    max_pixels = getattr(args, "max_pixels", None) or 12845056
    proc = Qwen2VLImageProcessor(min_pixels=3136, max_pixels=max_pixels)
    config, why = qp.config_from_processor(proc)
    if config is None:
        raise SystemExit(f"the fast path does not cover this configuration: {why}")
    rows = [measure_image(name, data, proc, config, args.repeats, args.warmup) for name, data in images.items()]
    return {"bench": "preprocess", "arch": "qwen2_5_vl", "max_pixels": max_pixels, "repeats": args.repeats,
            "device": "cpu", "images": rows}


def print_table(report: dict) -> None:
    print(f"bench preprocess qwen2_5_vl: {report['machine']}; max_pixels {report['max_pixels']}, {report['repeats']} repeats")
    print_rows(report, list(PATHS), "patches (frame x2)", extra="tokens")

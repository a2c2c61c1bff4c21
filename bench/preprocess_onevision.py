"""``guardedge bench preprocess --arch llava_onevision``: runtime/pixels_onevision.py against
transformers' LlavaOnevisionImageProcessor, same images, same run.

The paths, interleaved in every repeat as bench/preprocess.py does for Mllama:
- ``decode``: runtime/images.py as the engine runs it;
- ``transformers``: the slow LlavaOnevisionImageProcessor (what the model card runs) on the
  decoded image, told ``input_data_format="channels_last"`` as the engine's fallback tells it;
- ``compact``: ``pixels_onevision.compact`` (the processor's two PIL resizes, uint8): what a
  request pays before it queues;
- ``compact+float``: that plus ``pixels_onevision.pixel_values`` (what collate adds).
The default configuration is LlavaGuard v1.2's (384-px patches, the 6 x 6 pinpoints, bicubic,
mean/std 0.5); ``--tile 28`` is the demo LlavaGuard's (the same pinpoints in units of 28).
"""

from __future__ import annotations

from guardedge.bench.preprocess_common import interleaved, percentiles, print_rows

PATHS = ("decode", "transformers", "compact", "compact+float")


def processor(tile: int):
    from transformers import LlavaOnevisionImageProcessor

    from guardedge.runtime.demo.llavaguard.layout import grid_pinpoints

    return LlavaOnevisionImageProcessor(size={"height": tile, "width": tile}, image_grid_pinpoints=grid_pinpoints(tile),
                                        image_mean=[0.5] * 3, image_std=[0.5] * 3, resample=3)


def config(proc):
    from guardedge.runtime import pixels_onevision

    found, why = pixels_onevision.config_from_processor(proc)
    if found is None:
        raise SystemExit(f"the fast path does not cover this configuration: {why}")
    return found


def _paths(data: bytes, proc, cfg) -> dict:
    from guardedge.runtime import pixels_onevision as po
    from guardedge.runtime.images import ImageLimits, load_image

    image = load_image(data, "image", "bench", ImageLimits()).image
    return {
        "decode": lambda: load_image(data, "image", "bench", ImageLimits()),
        "transformers": lambda: proc(images=[image], return_tensors="pt", input_data_format="channels_last"),
        "compact": lambda: po.compact(image, cfg),
        "compact+float": lambda: po.pixel_values([po.compact(image, cfg)], cfg),
    }


def measure_image(name: str, data: bytes, proc, cfg, repeats: int, warmup: int) -> dict:
    """Timings per path (interleaved), exactness, and the bytes a queued request holds for this image."""
    import torch

    paths = _paths(data, proc, cfg)
    ref = paths["transformers"]()["pixel_values"][0]
    fast = paths["compact+float"]()[0]
    compact = paths["compact"]()
    height, width = compact.image_size
    times = interleaved(paths, warmup, repeats)
    same_shape = fast.shape == ref.shape
    rows, cols = compact.canvas[0] // cfg.tile, compact.canvas[1] // cfg.tile
    row = {"image": name, "size": f"{width}x{height}", "bytes": len(data), "grid": [rows, cols],
           "patches": compact.num_patches, "exact": bool(same_shape and torch.equal(fast, ref)),
           "max_abs_diff": float((fast - ref).abs().max()) if same_shape else None,
           "timings": {k: percentiles(v) for k, v in times.items()},
           "queued_bytes": {"compact": compact.nbytes, "float32_tiles": compact.num_patches * 3 * cfg.tile**2 * 4,
                            "decoded_image": width * height * 4}}  # Pillow keeps RGB in 4 bytes per pixel
    t = row["timings"]
    row["speedup"] = {k: round(t["transformers"]["p50_ms"] / t[k]["p50_ms"], 2) for k in ("compact", "compact+float")}
    return row


def run(args, images: dict[str, bytes]) -> dict:
    """The report for ``images`` at ``args.tile`` (384 unless given)."""
    if args.device != "cpu":
        raise SystemExit("--device is for --arch mllama only")
    tile = args.tile or 384
    proc = processor(tile)
    cfg = config(proc)
    rows = [measure_image(name, data, proc, cfg, args.repeats, args.warmup) for name, data in images.items()]
    return {"bench": "preprocess", "arch": "llava_onevision", "tile": tile, "pinpoints": "6x6 (anyres_max_9)",
            "repeats": args.repeats, "device": "cpu", "images": rows}


def print_table(report: dict) -> None:
    print(f"bench preprocess --arch llava_onevision: {report['machine']}; patches {report['tile']} px, pinpoints {report['pinpoints']}")
    print_rows(report, list(PATHS), "patches", extra="patches")

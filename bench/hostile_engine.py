"""``guardedge bench hostile --cases images,mixed``: the engine's side of issue 19, in this process.

- **images**: the worst images the limits admit (36 Mpx: 6000 x 6000, 84800 x 424 and 424 x 84800,
  the 200:1 aspect ratio) decoded and encoded by each demo guard's architecture: seconds and peak
  RSS above the level before (freed memory given back first, so reused memory does not hide it).
- **mixed**: a verdict-only LlavaGuard request batched with rationale requests (``--batch`` rows)
  against a batch of verdict-only requests (iteration-level batching, item 5): the time from the
  batch's start to the verdict-only row's answer (``on_verdict``), and to the batch's end (what that
  row paid before rows were answered as they complete); ``--rounds`` interleaved rounds after a
  warm-up, p50 / p90 and the ratios against the pure batch measured in the same round.

The server's side (floods, refused bursts, two models, probes) is bench/hostile_load.py.
"""

from __future__ import annotations

import io
import math
import statistics
import time

from guardedge.bench.hostile_images import large_jpeg
from guardedge.bench.peakmem import peak_extra_mb


def images() -> dict:
    import gc

    from PIL import Image

    from guardedge.runtime.engine import EngineOptions, load_engine
    from guardedge.runtime.images import ImageLimits, decode_image, probe_image
    from guardedge.runtime.service.memory import trim

    def png(size: tuple[int, int]) -> bytes:
        out = io.BytesIO()
        Image.new("RGB", size, (90, 30, 200)).save(out, "PNG", compress_level=1)
        return out.getvalue()

    rows = []
    datas = {size: png(size) for size in ((6000, 6000), (84800, 424), (424, 84800))}
    for model in ("demo-llavaguard", "demo"):
        arch = load_engine(model, EngineOptions(progress=False)).pre.arch
        for size, data in datas.items():
            probed = probe_image(data, "image", "bench", ImageLimits())
            gc.collect()
            trim()  # memory freed earlier would hide the allocation otherwise
            extra, seconds = peak_extra_mb(lambda: arch.encode_image(decode_image(probed).image))
            rows.append({"model": model, "image": f"{size[0]}x{size[1]} PNG ({len(data) // 1024} KB)",
                         "seconds": round(seconds, 2), "peak_extra_mb": round(extra)})
    return {"case": "images: the worst images the limits admit, decoded and encoded", "rows": rows}


def mixed(rounds: int = 10, batch: int = 8) -> dict:
    """The verdict-only row's time to its answer, in a batch with rationale rows and in a pure batch."""
    import base64

    from guardedge.runtime.engine import EngineOptions, load_engine

    engine = load_engine("demo-llavaguard", EngineOptions(max_batch_size=batch, progress=False))
    image = {"type": "image", "data": base64.b64encode(large_jpeg()).decode()}
    parse = lambda rationale: engine.prepare(engine.parse({"messages": [{"role": "user", "content": [image]}], "rationale": rationale}))  # noqa: E731
    pure = [parse(False) for _ in range(batch)]
    mix = [pure[0]] + [parse(True) for _ in range(batch - 1)]

    def row0(prepared) -> tuple[float, float]:
        told: dict[int, float] = {}
        started = time.perf_counter()
        engine.run(prepared, on_verdict=lambda row, _: told.setdefault(row, time.perf_counter() - started))
        return told[0], time.perf_counter() - started

    for _ in range(2):  # warm-up
        row0(pure), row0(mix)
    runs = {"pure_row0": [], "pure_batch": [], "mixed_row0": [], "mixed_batch": []}
    for _ in range(rounds):  # interleaved: both sides see the same machine load
        first, whole = row0(pure)
        runs["pure_row0"].append(first), runs["pure_batch"].append(whole)
        first, whole = row0(mix)
        runs["mixed_row0"].append(first), runs["mixed_batch"].append(whole)
    p50 = {k: statistics.median(v) for k, v in runs.items()}
    return {"case": f"mixed: a verdict-only row with {batch - 1} rationale rows vs {batch} verdict-only rows (demo-llavaguard, "
            "4000x3000 JPEG)", "rounds": rounds,
            **{k: {"p50_s": round(statistics.median(v), 3), "p90_s": round(sorted(v)[math.ceil(0.9 * len(v)) - 1], 3)}
               for k, v in runs.items()},
            # What the verdict-only caller pays against a pure verdict-only batch: now (answered when its row is
            # complete) and before (answered when the whole batch was).
            "row0_mixed_over_pure_batch": round(p50["mixed_row0"] / p50["pure_batch"], 2),
            "before_mixed_batch_over_pure_batch": round(p50["mixed_batch"] / p50["pure_batch"], 2)}

"""What every ``bench preprocess`` architecture shares: interleaved timing, percentiles, the table.

bench/preprocess.py (Mllama) and bench/preprocess_onevision.py (LLaVA-OneVision) both build on it.
"""

from __future__ import annotations

import math
import statistics
import time


def percentiles(seconds: list[float]) -> dict:
    ms = sorted(s * 1000 for s in seconds)
    return {"p50_ms": round(statistics.median(ms), 3), "p90_ms": round(ms[math.ceil(0.9 * len(ms)) - 1], 3)}


def print_rows(report: dict, names: list[str], unit: str, extra: str = "") -> None:
    """One row per image (both architectures): p50/p90 per path, speedup, exactness, queued MB.
    ``extra``: a per-image count printed after the grid (LLaVA-OneVision's "patches")."""
    head = f" {extra:>7}" if extra else ""
    print(f"{'image':<22} {'grid':>5}{head} " + " ".join(f"{n + ' p50/p90 ms':>26}" for n in names)
          + f" {'speedup':>8} {'exact':>6} {'queued MB c/f/img':>18}")
    for r in report["images"]:
        cells = " ".join(f"{r['timings'][n]['p50_ms']:>12.2f} / {r['timings'][n]['p90_ms']:>9.2f}" for n in names)
        q = r["queued_bytes"]
        mb = f"{q['compact'] / 1e6:.2f}/{q['float32_tiles'] / 1e6:.2f}/{q['decoded_image'] / 1e6:.1f}"
        grid = "x".join(map(str, r["grid"]))
        count = f" {r[extra]:>7}" if extra else ""
        print(f"{r['image'][:22]:<22} {grid:>5}{count} {cells} {r['speedup']['compact+float']:>7.2f}x {str(r['exact']):>6} {mb:>18}")
    print(f"speedup: transformers p50 / compact+float p50. queued MB: compact pixels / float32 {unit} / decoded image.")


def interleaved(paths: dict, warmup: int, repeats: int) -> dict[str, list[float]]:
    """Seconds per timed call of each path, the paths interleaved within every round (a shared
    machine's load then falls on all of them alike); the first ``warmup`` rounds are not kept."""
    times: dict[str, list[float]] = {k: [] for k in paths}
    for i in range(warmup + repeats):
        for key, fn in paths.items():
            started = time.perf_counter()
            fn()
            if i >= warmup:
                times[key].append(time.perf_counter() - started)
    return times

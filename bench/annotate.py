"""``guardedge bench annotate``: does bulk annotation keep the model the bottleneck?

On the same N generated images (a folder of PNGs, written once), three ways, interleaved in each
repeat so a shared machine's noise hits all three alike:

- ``engine.run`` — the engine's own batched throughput: every request parsed and prepared
  beforehand (untimed), then only ``engine.run`` over batches of ``--batch-size``: the model alone,
  the ceiling;
- ``engine.classify`` — the engine's batched API as a caller uses it: parse (decode the image),
  prepare, run, one after the other on one thread;
- ``annotate`` — ``guardedge annotate``'s local pipeline (runtime/annotate/runner.py) into a fresh
  output: the folder read, images decoded and preprocessed by ``--workers`` threads while the
  engine runs, rows written as Parquet parts.

Items/s per repeat; the table gives the median and the range over ``--repeats`` (after one
untimed warm-up of each), the ratio of annotate's median to each reference's median, and the
median and range of the per-repeat ratios (each annotate pass over the reference pass measured
moments before it: on a shared machine the pairs share the load).

    guardedge bench annotate --model demo --images 48 --repeats 4 [--batch-size 8 --workers 2]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="demo", help="'demo', 'demo-llavaguard' or a model directory")
    parser.add_argument("--images", type=int, default=48, help="generated images (default 48)")
    parser.add_argument("--repeats", type=int, default=4, help="timed repeats of each way (default 4)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2, help="annotate's preprocessing threads (default 2)")
    parser.add_argument("--threads", type=int, help="torch threads (default: the CPU quota)")


def write_images(folder: Path, n: int) -> Path:
    """``n`` PNGs from both demo guards' generators (hazard colours, safe photos), sizes 96-112 x 64-72."""
    from guardedge.runtime.demo.data import IMAGE_COLOURS, ImageSpec
    from guardedge.runtime.demo.llavaguard.data import HAZARD_COLOURS, Image

    colours = list(HAZARD_COLOURS.values()) + list(IMAGE_COLOURS.values())
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        size = (96 + 8 * (i % 3), 64 + 8 * (i % 2))
        picture = (Image((0, 0, 0), size, i, "photo") if i % 3 == 0 else
                   Image(colours[i % len(colours)], size, i) if i % 3 == 1 else ImageSpec(colours[i % len(colours)], size, seed=i))
        buffer = io.BytesIO()
        picture.render().save(buffer, format="PNG")
        (folder / f"img{i:05d}.png").write_bytes(buffer.getvalue())
    return folder


def time_engine_run(engine, prepared: list, batch: int) -> float:
    start = time.perf_counter()
    for i in range(0, len(prepared), batch):
        engine.run(prepared[i: i + batch])
    return len(prepared) / (time.perf_counter() - start)


def time_classify(engine, items: list) -> float:
    start = time.perf_counter()
    engine.classify([engine.parse(item.request) for item in items])
    return len(items) / (time.perf_counter() - start)


def time_annotate(engine, source, out: Path, batch: int, workers: int) -> float:
    from guardedge.runtime.annotate.policy import Policy
    from guardedge.runtime.annotate.runner import Annotator, LocalRun
    from guardedge.runtime.annotate.sink import OutputDir, RunIdentity

    shutil.rmtree(out, ignore_errors=True)
    annotator = Annotator(engine, Policy(), "bench")
    identity = RunIdentity("bench", "bench", annotator.family, annotator.policy_sha256, False, "parquet")
    stats = LocalRun(annotator, OutputDir(out, identity), batch, workers).run(source)
    assert stats.written == len(list(source)) and stats.errors == 0
    BUSY.append(stats.engine_busy)
    return stats.items_per_second


BUSY: list[float] = []  # annotate's engine-busy share per pass (warm-up first)


def main(args: argparse.Namespace) -> int:
    from guardedge.runtime import threads
    from guardedge.runtime.annotate.sources import open_source
    from guardedge.runtime.engine import EngineOptions, load_engine

    threads.apply(args.threads)
    engine = load_engine(args.model, EngineOptions(max_batch_size=args.batch_size, progress=False))
    with tempfile.TemporaryDirectory(prefix="bench-annotate-") as tmp:
        source = open_source([str(write_images(Path(tmp) / "images", args.images))])
        items = list(source)
        prepared = [engine.prepare(engine.parse(item.request)) for item in items]
        ways = {"engine.run": lambda: time_engine_run(engine, prepared, args.batch_size),
                "engine.classify": lambda: time_classify(engine, items),
                "annotate": lambda: time_annotate(engine, source, Path(tmp) / "out", args.batch_size, args.workers)}
        results: dict[str, list[float]] = {name: [] for name in ways}
        for repeat in range(args.repeats + 1):  # repeat 0 warms up
            for name, way in ways.items():
                rate = way()
                if repeat:
                    results[name].append(rate)
    return report(args, engine, results)


def report(args: argparse.Namespace, engine, results: dict[str, list[float]]) -> int:
    import torch

    medians = {name: statistics.median(rates) for name, rates in results.items()}
    # Per repeat, annotate over each reference measured moments apart: the pairs share the machine's load.
    paired = {name: sorted(a / r for a, r in zip(results["annotate"], rates)) for name, rates in results.items()}
    print(f"bench annotate: {args.model} ({engine.info().family}), {args.images} images, batch {args.batch_size}, "
          f"{args.workers} workers, {args.repeats} repeats; {machine(torch)}")
    print(f"{'way':<16} {'median items/s':>15} {'min':>8} {'max':>8} {'annotate / this':>16} {'per repeat: median [min, max]':>30}")
    for name, rates in results.items():
        ratios = paired[name]
        print(f"{name:<16} {medians[name]:>15.2f} {min(rates):>8.2f} {max(rates):>8.2f} "
              f"{medians['annotate'] / medians[name]:>16.3f} {statistics.median(ratios):>14.3f} [{ratios[0]:.3f}, {ratios[-1]:.3f}]")
    busy = sorted(BUSY[1:])
    print(f"annotate kept the engine busy {statistics.median(busy):.1%} of its wall time (median; range "
          f"{busy[0]:.1%}-{busy[-1]:.1%}): the rest is the pipeline waiting on preprocessing, reading or writing")
    print(json.dumps({"bench": "annotate", "model": args.model, "family": engine.info().family, "images": args.images,
                      "batch_size": args.batch_size, "workers": args.workers, "repeats": args.repeats,
                      "items_per_second": {k: [round(r, 3) for r in v] for k, v in results.items()},
                      "median": {k: round(v, 3) for k, v in medians.items()},
                      "ratio_to_engine_run": round(medians["annotate"] / medians["engine.run"], 3),
                      "ratio_to_engine_classify": round(medians["annotate"] / medians["engine.classify"], 3),
                      "annotate_engine_busy": [round(b, 3) for b in BUSY[1:]],
                      "paired_ratio_median": {k: round(statistics.median(v), 3) for k, v in paired.items()},
                      "machine": machine(torch)}))
    return 0


def machine(torch) -> str:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"{platform.machine()} {os.cpu_count()} cpus, {torch.get_num_threads()} torch threads, "
            f"load average {load:.1f} at the end")

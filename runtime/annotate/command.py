"""``guardedge annotate``: the argparse face of bulk annotation (docs/annotate.md).

    guardedge annotate --model demo-llavaguard --input photos/ --out labels/ [--rationale] [--report labels.md]
    guardedge annotate --model demo --input data.parquet --image-column image --text-column prompt --out labels/
    guardedge annotate --model demo --input 'shards/*.tar' --out labels/ --ray [ADDRESS] --actors 4

Building the parser imports nothing heavy (``guardedge --help`` stays instant); the engine,
pyarrow and Ray load when the command runs. Exit codes: 0 done (rows with errors included: they
are in the output); 1 the command could not run (bad arguments, another model's output); 128+N
stopped by signal N, with what was done written (rerun the same command to resume).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="demo", help="'demo', 'demo-llavaguard' or a local model directory / artifact")
    parser.add_argument("--input", action="append", required=True, metavar="SRC",
                        help="a folder of images, a JSONL of classify requests, Parquet or CSV, WebDataset .tar shards "
                             "(a file, a directory or a glob; repeat for more)")
    parser.add_argument("--out", required=True, help="output directory (created; rerun the same command to resume)")
    parser.add_argument("--format", default="auto", choices=["auto", "folder", "jsonl", "parquet", "csv", "webdataset"])
    parser.add_argument("--output-format", default="parquet", choices=["parquet", "jsonl"])
    columns = parser.add_argument_group("table columns (Parquet, CSV) and WebDataset extensions")
    columns.add_argument("--key-column", help="the item key (default: key, id or __key__; else FILE:ROW)")
    columns.add_argument("--image-column", help="image paths, bytes or {bytes, path} structs (default: image, path, ...)")
    columns.add_argument("--text-column", help="the user's text (WebDataset: an extension such as txt); off by default")
    columns.add_argument("--response-column", help="the assistant's reply, for response classification")
    policy = parser.add_argument_group("policy (an item's own fields win)")
    policy.add_argument("--categories", metavar="FILE.json", help="JSON object code -> description replacing the defaults")
    policy.add_argument("--exclude", metavar="CODES", help="comma-separated category codes to leave out")
    policy.add_argument("--threshold", type=float, help="unsafe iff P(unsafe) >= this")
    policy.add_argument("--rationale", action="store_true", help="ask a guard that writes one (LlavaGuard) for its rationale")
    run = parser.add_argument_group("running")
    run.add_argument("--batch-size", type=int, default=8, help="engine batch (default 8)")
    run.add_argument("--workers", type=int, default=2, help="threads decoding and preprocessing (default 2)")
    run.add_argument("--flush-rows", type=int, default=1000, help="commit a part file every N rows (default 1000)")
    run.add_argument("--flush-seconds", type=float, default=30.0, help="... or every S seconds (default 30)")
    run.add_argument("--report", metavar="FILE.md", help="write a Markdown summary and FILE.png (P(unsafe) histogram)")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.add_argument("--family", help="override the guard family the model implies")
    run.add_argument("--device", default="auto")
    run.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    run.add_argument("--prompt-source", default="builtin", choices=["builtin", "model"])
    run.add_argument("--threads", type=int, help="torch threads (default: $GUARDEDGE_THREADS, else the CPU quota)")
    ray = parser.add_argument_group("on a Ray cluster (pip install 'guardedge[ray]')")
    ray.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                     help="run on Ray: an existing cluster's address ('auto' finds the one this machine joined), "
                          "or nothing for a local instance")
    ray.add_argument("--actors", type=int, help="engines in the actor pool (default: one per GPU, else one per "
                     "--cpus-per-actor CPUs, leaving one CPU for reading; actors holding every CPU starve the reads)")
    ray.add_argument("--cpus-per-actor", type=float, default=1.0, help="CPUs each actor reserves (torch threads: at least 1)")
    ray.add_argument("--gpus-per-actor", type=float, help="default 1 when the cluster has GPUs, else 0")
    ray.add_argument("--ray-cpus", type=int, help="CPUs of the local instance (default: all)")


def main(args: argparse.Namespace) -> int:
    from guardedge.runtime.annotate.policy import load_policy
    from guardedge.runtime.annotate.sources import Columns, SourceError, open_source

    for name in ("batch_size", "workers", "flush_rows"):
        if getattr(args, name) < 1:
            raise SystemExit(f"guardedge annotate: --{name.replace('_', '-')} must be at least 1")
    try:
        policy = load_policy(args.categories, args.exclude, args.threshold, args.rationale)
        columns = Columns(args.key_column, args.image_column, args.text_column, args.response_column)
        source = open_source(args.input, args.format, columns)
    except (ValueError, SourceError) as exc:
        raise SystemExit(f"guardedge annotate: {exc}") from None
    if args.ray is not None:
        from guardedge.runtime.annotate.ray_path import run_ray

        return finish(args, *run_ray(args, source, policy))
    return finish(args, *run_local(args, source, policy))


def run_local(args: argparse.Namespace, source, policy):
    from guardedge.runtime import threads
    from guardedge.runtime.annotate.runner import Annotator, LocalRun
    from guardedge.runtime.annotate.sink import prepare_output
    from guardedge.runtime.engine import EngineOptions, build_engine

    model_dir, out = prepare_output(args, source, policy)  # refused before any weight loads
    threads.apply(args.threads)
    options = EngineOptions(device=args.device, dtype=args.dtype, max_batch_size=args.batch_size,
                            prompt_source=args.prompt_source, family=args.family, progress=not args.no_progress)
    annotator = Annotator(build_engine(model_dir, options), policy, out.identity.model_sha256)
    assert annotator.policy_sha256 == out.identity.policy_sha256  # the same family defaults either way
    run = LocalRun(annotator, out, args.batch_size, args.workers, args.flush_rows, args.flush_seconds,
                   progress=not args.no_progress)
    return out, run.run(source, _total(source))


def _total(source) -> int | None:
    try:
        return source.total()
    except Exception:  # the count only feeds the ETA
        return None


def finish(args: argparse.Namespace, out, stats) -> int:
    """The summary (human lines, then one JSON line), the report, and the exit code."""
    from guardedge.runtime.annotate.summary import summarize, text, write_report

    summary = summarize(out.path)
    print(text(summary, stats))
    if args.report:
        plot = write_report(Path(args.report), summary, stats)
        print(f"report: {args.report} ({plot.name})")
    print(json.dumps({"out": str(out.path), **summary.to_json(), "run": {
        "written": stats.written, "errors": stats.errors, "already_done": stats.already_done,
        "duplicates": stats.duplicates, "seconds": round(stats.seconds, 3),
        "items_per_second": round(stats.items_per_second, 3), "engine_busy": round(stats.engine_busy, 3),
        "stopped_by": stats.stopped_by or None}}))
    sys.stdout.flush()
    if stats.stopped_by:
        import signal

        return 128 + int(getattr(signal, stats.stopped_by.split()[0], signal.SIGINT))
    return 0

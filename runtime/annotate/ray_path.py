"""``guardedge annotate --ray [ADDRESS]``: the same annotation on a Ray cluster (imported only then).

    guardedge annotate --model /models/LlavaGuard-7B --input 's3-mount/shards/*.tar' --out labels/ --ray auto

- **Reading**: Ray Data reads the source: ``read_parquet`` (a key column is required: row numbers
  are not stable across Ray's blocks), ``read_webdataset(decoder=None)`` (raw member bytes); a
  folder is listed by the driver (a sorted walk, ~100 bytes a path) into ``from_items`` and the
  actors read the images, as the local workers do. JSONL and CSV are refused here (their keys
  are line numbers): convert them to Parquet, or run without ``--ray``.
- **Annotating**: ``map_batches`` with the callable class :class:`RayAnnotator` (the engine loaded
  once per actor) on ``compute=ray.data.ActorPoolStrategy(size=K)``, ``num_gpus`` per actor
  (one engine per GPU, or per ``--cpus-per-actor`` CPUs). Each actor turns rows into items with
  the local path's own functions (runtime/annotate/tables.py, shards.py) and runs the local
  path's :class:`Annotator`, so rows are the same.
- **Writing and resuming**: the driver consumes the stream and commits part files through the
  same sink as the local path (runtime/annotate/sink.py), so the output directory, its header and
  its resumption are the same: keys already committed are skipped by the actors (the key index
  is broadcast once) and again by the driver, which also drops a key it has already written in
  this run. A task that Ray retries after an actor died yields its rows once, and the driver's
  key check makes that certain: nothing is lost, nothing duplicated.

Why the driver writes rather than ``Dataset.write_parquet``: the output is rows of verdicts (no
images), small beside the inputs, and a single committer gives atomic parts and exactly-once
resumption that does not depend on the Ray version (docs/decisions/0013).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from guardedge.runtime.annotate.keys import KeyIndex
from guardedge.runtime.annotate.policy import Policy
from guardedge.runtime.annotate.rows import from_arrow
from guardedge.runtime.annotate.runner import Annotator, LocalRun
from guardedge.runtime.annotate.shards import sample_item
from guardedge.runtime.annotate.sources import Columns, Item, Source, SourceError, folder_files, folder_request
from guardedge.runtime.annotate.tables import resolve_columns, row_item


def items_of(rows: list[dict], fmt: str, columns: Columns, base_dir: str | None) -> list[Item]:
    """Ray rows as the local path's items (identical keys and requests)."""
    if fmt == "folder":
        return [Item(row["key"], folder_request(row["path"])) for row in rows]
    if fmt == "parquet":
        return [row_item(row, columns, Path(base_dir) if base_dir else None, "") for row in rows]
    out = []
    for row in rows:  # webdataset: __key__, __url__ and one column per member extension
        # A sample lacking an extension other samples of its block have reads as None or NaN (pandas blocks).
        members = {k.lower(): bytes(v) for k, v in row.items()
                   if not k.startswith("__") and isinstance(v, (bytes, bytearray, memoryview))}
        out.append(sample_item(os.path.basename(row["__url__"]), row["__key__"], members, columns.text))
    return out


class RayAnnotator:
    """The callable class of ``map_batches``: one engine per actor, rows of items in and out."""

    def __init__(self, model: str, engine_options: dict, policy: Policy, model_sha256: str, fmt: str,
                 columns: Columns, base_dir: str | None, done, batch_size: int, threads: int | None, workers: int = 2):
        from concurrent.futures import ThreadPoolExecutor

        from guardedge.runtime import threads as thread_count
        from guardedge.runtime.engine import EngineOptions, load_engine

        thread_count.apply(threads)
        self.engine = load_engine(model, EngineOptions(**engine_options, progress=False))
        self.annotator = Annotator(self.engine, policy, model_sha256)
        self.fmt, self.columns, self.base_dir, self.batch_size = fmt, columns, base_dir, batch_size
        self.done = _resolve(done)
        self.pool = ThreadPoolExecutor(max(1, workers), thread_name_prefix="annotate-prep")

    def __call__(self, batch):
        from guardedge.runtime.annotate.rows import to_table

        items = [i for i in items_of(batch.to_pylist(), self.fmt, self.columns, self.base_dir) if i.key not in self.done]
        return to_table(self.annotator.rows(items, self.batch_size, self.pool))


def _resolve(done):
    """The key index, fetched from the object store when it was put there."""
    if isinstance(done, KeyIndex):
        return done
    import ray

    return ray.get(done)


class RayRun(LocalRun):
    """The driver: builds the dataset, streams the actors' rows, commits them (LocalRun's sink,
    stats, signals and progress bar)."""

    def __init__(self, build, out, **kwargs):
        super().__init__(None, out, **kwargs)
        self.build = build  # done KeyIndex -> ray.data.Dataset of output rows

    def _pipeline(self, items, done: KeyIndex, writer) -> None:
        self.stats.already_done = len(done)  # the actors skip them: counted here, as committed before
        seen = KeyIndex()
        for batch in self.build(done).iter_batches(batch_size=None, batch_format="pyarrow"):
            fresh = [row for row in map(from_arrow, batch.to_pylist()) if self._is_new(row["key"], done, seen)]
            self._commit(fresh, writer)
            if self._stop.is_set():
                return


def run_ray(args: argparse.Namespace, source: Source, policy: Policy):
    """Annotate ``source`` on Ray; returns (OutputDir, RunStats) like the local path."""
    try:
        import ray
    except ImportError:
        raise SystemExit("guardedge annotate --ray needs Ray: pip install 'guardedge[ray]'") from None
    from guardedge.runtime.annotate.sink import prepare_output

    if source.format not in ("folder", "parquet", "webdataset"):
        raise SystemExit(f"guardedge annotate --ray reads folders, Parquet and WebDataset shards, not {source.format}: "
                         "convert it to Parquet, or run without --ray")
    columns = _columns(source)
    _, out = prepare_output(args, source, policy)  # no weights loaded on the driver
    model_sha256 = out.identity.model_sha256
    _init(ray, args)
    try:
        build = _builder(ray, args, source, columns, policy, model_sha256)
        run = RayRun(build, out, batch_size=args.batch_size, flush_rows=args.flush_rows,
                     flush_seconds=args.flush_seconds, progress=not args.no_progress)
        return out, run.run([], source.total() if source.format != "folder" else None)
    finally:
        ray.shutdown()


def _columns(source: Source) -> Columns:
    if source.format != "parquet":
        return source.columns
    import pyarrow.parquet as pq

    columns = resolve_columns(pq.read_schema(source.paths[0]).names, source.columns, str(source.paths[0]))
    if columns.key is None:
        raise SourceError("with --ray, Parquet needs a key column (--key-column, or a column named key, id or __key__): "
                          "row numbers are not stable across Ray's blocks")
    return columns


def _init(ray, args: argparse.Namespace) -> None:
    if args.ray == "local":
        ray.init(num_cpus=args.ray_cpus, include_dashboard=False, log_to_driver=False)
    else:
        ray.init(address=args.ray, log_to_driver=False)


def _builder(ray, args: argparse.Namespace, source: Source, columns: Columns, policy: Policy, model_sha256: str):
    gpus = args.gpus_per_actor if args.gpus_per_actor is not None else (1.0 if ray.cluster_resources().get("GPU") else 0.0)
    actors = args.actors or _default_actors(ray, gpus, args.cpus_per_actor)
    parents = {str(p.parent) for p in source.paths}
    base_dir = parents.pop() if len(parents) == 1 else None  # relative image paths in a table resolve here
    engine_options = {"device": args.device, "dtype": args.dtype, "max_batch_size": args.batch_size,
                      "prompt_source": args.prompt_source, "family": args.family}

    def build(done: KeyIndex):
        ds = _read(ray, source)
        kwargs = dict(model=args.model, engine_options=engine_options, policy=policy, model_sha256=model_sha256,
                      fmt=source.format, columns=columns, base_dir=base_dir,
                      done=ray.put(done), batch_size=args.batch_size,
                      threads=args.threads or max(1, int(args.cpus_per_actor)), workers=args.workers)
        return ds.map_batches(RayAnnotator, fn_constructor_kwargs=kwargs, batch_size=args.batch_size * 4,
                              batch_format="pyarrow", compute=ray.data.ActorPoolStrategy(size=actors),
                              num_cpus=args.cpus_per_actor, num_gpus=gpus)
    return build


def _default_actors(ray, gpus: float, cpus: float) -> int:
    resources = ray.cluster_resources()
    if gpus > 0:
        return max(1, int(resources.get("GPU", 1) // gpus))
    # One CPU stays free for Ray Data's read tasks: actors holding every CPU would starve them (a hang).
    return max(1, int((resources.get("CPU", 2) - 1) // max(cpus, 0.01)))


def _read(ray, source: Source):
    paths = [str(p) for p in source.paths]
    if source.format == "parquet":
        return ray.data.read_parquet(paths)
    if source.format == "webdataset":
        return ray.data.read_webdataset(paths, decoder=None)
    rows = [{"key": f.relative_to(root).as_posix(), "path": str(f)} for root in source.paths for f in folder_files(root)]
    return ray.data.from_items(rows)

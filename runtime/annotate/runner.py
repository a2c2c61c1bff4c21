"""The single-machine pipeline: stream items, preprocess in parallel, run engine batches, commit rows.

    source ─► main thread: skip done keys ─► worker threads: engine.parse + engine.prepare
           ─► main thread: engine.run(batch of --batch-size) ─► rows ─► part files (runtime/annotate/sink.py)

The workers decode images and tokenize (the engine's ``prepare``: PIL, NumPy and the tokenizer
release the GIL) while the main thread runs the model on the previous batch, so the model stays
the bottleneck. Items are taken in source order and at most ``ahead`` (2 x batch size + workers)
are submitted beyond the batch being formed.

**Memory bound**: ``ahead`` items in flight (each its source bytes, at most the image cap,
20 MiB, and once prepared its preprocessed pixels: Mllama keeps compact uint8 pixels, 0.9-2.8 MB
(bench/RESULTS.md, preprocessing), LLaVA-OV at most 10 anyres tiles of 384 px in fp32, ~18 MB),
plus one batch on the engine, plus at most ``flush_rows`` buffered
output rows, plus the key index (16 bytes a key, runtime/annotate/keys.py), plus what the source
reads at once (one Parquet record batch of 256 rows, one WebDataset sample, one JSONL line).
Nothing grows with the dataset but the key index.

Errors never stop the run: an item the source cannot read, a request the engine refuses, an
item the engine fails on (a failed batch is retried one item at a time) each become a row with
``error`` set. SIGINT or SIGTERM stops it cleanly: the batch on the engine finishes, its rows
and every buffered row are committed, and the run returns; a second signal stops at once
(committed parts stay whole either way). Rerunning the same command resumes.
"""

from __future__ import annotations

import signal
import threading
import time
from collections import Counter, deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Iterable

from guardedge.runtime.annotate.keys import KeyIndex
from guardedge.runtime.annotate.policy import Policy, request_digest
from guardedge.runtime.annotate.rows import error_row, verdict_row
from guardedge.runtime.annotate.sink import OutputDir
from guardedge.runtime.annotate.sources import Item
from guardedge.runtime.errors import InvalidRequest


@dataclass
class RunStats:
    """What this run did (the summary adds the whole output's counts)."""

    written: int = 0
    errors: int = 0
    already_done: int = 0  # keys committed by an earlier run, skipped
    duplicates: int = 0  # keys seen twice in the source this run, the later ones skipped
    duplicate_examples: list[str] = field(default_factory=list)
    seconds: float = 0.0
    engine_seconds: float = 0.0  # inside engine.run: near ``seconds`` when the model is the bottleneck
    stopped_by: str = ""  # "SIGINT" / "SIGTERM" when a signal stopped it
    verdicts: Counter = field(default_factory=Counter)

    @property
    def items_per_second(self) -> float:
        return self.written / self.seconds if self.seconds > 0 else 0.0

    @property
    def engine_busy(self) -> float:
        """The share of the run the engine was running a batch (1.0: preprocessing never made it wait)."""
        return self.engine_seconds / self.seconds if self.seconds > 0 else 0.0


class Annotator:
    """Turns items into rows with one engine: the part both the local and the Ray path run."""

    def __init__(self, engine, policy: Policy, model_sha256: str):
        self.engine = engine
        self.policy = policy
        self.model_sha256 = model_sha256
        info = engine.info()
        self.family, self.defaults = info.family, info.categories
        self.policy_sha256 = policy.digest(self.family, self.defaults)

    def prepare(self, item: Item):
        """A Prepared request, or the error row of an item that cannot become one."""
        if item.request is None:
            return self.error(item.key, f"SOURCE: {item.error}")
        try:
            return self.engine.prepare(self.engine.parse(self.policy.apply(item.request), item.base_dir))
        except InvalidRequest as exc:
            return self.error(item.key, f"INVALID_ARGUMENT: {exc}")
        except Exception as exc:  # an item must never stop the run
            return self.error(item.key, f"INTERNAL: preprocessing failed: {type(exc).__name__}: {exc}")

    def run(self, keyed: list[tuple[str, object]]) -> list[dict]:
        """Rows for prepared items (key, Prepared); a failing batch is retried item by item."""
        if not keyed:
            return []
        try:
            verdicts = [v for batch in self.engine.batches([p for _, p in keyed]) for v in self.engine.run(batch)]
        except Exception as exc:
            if len(keyed) == 1:
                return [self.error(keyed[0][0], f"INTERNAL: the engine failed: {type(exc).__name__}: {exc}")]
            return [row for one in keyed for row in self.run([one])]
        return [self._row(key, p, v) for (key, p), v in zip(keyed, verdicts)]

    def rows(self, items: Iterable[Item], batch_size: int, pool: ThreadPoolExecutor | None = None) -> list[dict]:
        """Rows for a handful of items (Ray actors, tests): prepared by ``pool`` when given, then run."""
        out, keyed, items = [], [], list(items)
        for item, prepared in zip(items, pool.map(self.prepare, items) if pool else map(self.prepare, items)):
            if isinstance(prepared, dict):
                out.append(prepared)
                continue
            keyed.append((item.key, prepared))
            if len(keyed) == batch_size:
                out.extend(self.run(keyed))
                keyed = []
        return out + self.run(keyed)

    def error(self, key: str, message: str) -> dict:
        return error_row(key, message, self.model_sha256, self.policy_sha256)

    def _row(self, key: str, prepared, verdict) -> dict:
        digest = request_digest(prepared.request, self.family, self.defaults)
        return verdict_row(key, verdict, self.model_sha256, digest, prepared.request.rationale)


class LocalRun:
    """One run of ``guardedge annotate`` on this machine (see the module docstring)."""

    def __init__(self, annotator: Annotator, out: OutputDir, batch_size: int = 8, workers: int = 2,
                 flush_rows: int = 1000, flush_seconds: float = 30.0, progress: bool = False):
        self.annotator = annotator
        self.out = out
        self.batch_size = max(1, batch_size)
        self.workers = max(1, workers)
        self.ahead = 2 * self.batch_size + self.workers
        self.flush = (flush_rows, flush_seconds)
        self.show_progress = progress
        self.stats = RunStats()
        self._stop = threading.Event()
        self._bar: Any = None  # the tqdm bar (untyped) while run() runs

    def run(self, items: Iterable[Item], total: int | None = None) -> RunStats:
        """Annotate ``items`` (``total``: how many the source holds, for the ETA, when known)."""
        done = self.out.open()
        writer = self.out.writer(*self.flush)
        started = time.perf_counter()
        restore = self._handle_signals()
        self._bar = progress_bar(None if total is None else max(0, total - len(done)), self.show_progress)
        try:
            self._pipeline(items, done, writer)
        except KeyboardInterrupt:  # a second signal: stop at once (the finally still commits finished rows)
            self.stats.stopped_by = f"{self.stats.stopped_by or 'SIGINT'} (twice: stopped at once)"
        finally:
            writer.flush()
            self.out.close()
            restore()
            self._bar.close()
            self.stats.seconds = time.perf_counter() - started
        return self.stats

    def _pipeline(self, items: Iterable[Item], done: KeyIndex, writer) -> None:
        pool = ThreadPoolExecutor(self.workers, thread_name_prefix="annotate-prep")
        try:
            self._stream(items, done, pool, writer)
        finally:  # on a stop, items still waiting to be prepared are dropped (they are redone on resume)
            pool.shutdown(wait=True, cancel_futures=True)

    def _stream(self, items: Iterable[Item], done: KeyIndex, pool: ThreadPoolExecutor, writer) -> None:
        window: deque[tuple[str, Future]] = deque()
        batch: list[tuple[str, object]] = []
        seen = KeyIndex()  # this run's keys: a key twice in the source is annotated once
        for item in items:
            if self._stop.is_set():
                return
            if not self._is_new(item.key, done, seen):
                continue
            window.append((item.key, pool.submit(self.annotator.prepare, item)))
            while len(window) >= self.ahead and not self._stop.is_set():
                batch = self._advance(window, batch, writer)
        while window and not self._stop.is_set():
            batch = self._advance(window, batch, writer)
        if not self._stop.is_set():
            self._run(batch, writer)

    def _is_new(self, key: str, done: KeyIndex, seen: KeyIndex) -> bool:
        if key in done:
            self.stats.already_done += 1
            return False
        if not seen.add(key):
            self.stats.duplicates += 1
            if len(self.stats.duplicate_examples) < 5:
                self.stats.duplicate_examples.append(key)
            return False
        return True

    def _advance(self, window, batch, writer) -> list:
        key, future = window.popleft()
        prepared = future.result()
        if isinstance(prepared, dict):  # an error row
            self._commit([prepared], writer)
            return batch
        batch.append((key, prepared))
        if len(batch) < self.batch_size:
            return batch
        self._run(batch, writer)
        return []

    def _run(self, batch: list, writer) -> None:
        started = time.perf_counter()
        rows = self.annotator.run(batch)
        self.stats.engine_seconds += time.perf_counter() - started
        self._commit(rows, writer)

    def _commit(self, rows: list[dict], writer) -> None:
        for row in rows:
            writer.add(row)
            self.stats.written += 1
            self.stats.errors += row["error"] is not None and row["verdict"] is None
            self.stats.verdicts[row["verdict"] or "error"] += 1
        if rows:
            self._bar.update(len(rows))
            self._bar.set_postfix(errors=self.stats.errors, refresh=False)

    def stop(self, why: str = "stop()") -> None:
        self.stats.stopped_by = self.stats.stopped_by or why
        self._stop.set()

    def _handle_signals(self):
        """SIGINT/SIGTERM: the first stops cleanly, the second at once (main thread only)."""
        if threading.current_thread() is not threading.main_thread():
            return lambda: None

        def handler(signum, frame):
            if self._stop.is_set():
                raise KeyboardInterrupt
            self.stop(signal.Signals(signum).name)

        old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
        return lambda: [signal.signal(s, h) for s, h in old.items()]


def progress_bar(total: int | None, show: bool):
    """tqdm on stderr: items/s, the ETA when the total is known, the error count as a postfix."""
    from tqdm import tqdm

    return tqdm(total=total, unit="item", desc="annotate", disable=not show, dynamic_ncols=True, smoothing=0.1)

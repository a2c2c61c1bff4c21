"""Dynamic batching for one model: concurrent requests coalesce into engine batches.

Policy (the knobs are ServerConfig's):
- **Admission**: at most ``max_queue_size`` requests wait (being preprocessed or queued); one more
  is refused at once with :class:`QueueFull`, never parked.
- **Batch formation**: when the engine is free, the worker takes up to ``max_batch_size`` queued
  requests. With ``max_queue_delay_ms`` > 0 and a partial batch it waits that long for more;
  with 0 it never waits, and batches form from requests that arrived while the engine was busy.
- **Dropped before model work**: a request whose caller went away (cancelled future) or whose
  deadline has passed is removed from the batch; the latter gets :class:`DeadlineExpired`.
- **Isolation**: if a batch raises, each of its requests is retried alone so only the request
  that fails gets the error.
Model work runs on one dedicated thread; the event loop only moves futures.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from guardedge.runtime.engine import Engine, Prepared
from guardedge.runtime.types import Verdict

log = logging.getLogger(__name__)


class QueueFull(Exception):
    """The model's queue is at ``max_queue_size``."""


class DeadlineExpired(Exception):
    """The request's deadline passed while it waited."""


class BatcherClosed(Exception):
    """The server is shutting down and this model takes no more work."""


class EngineFailure(Exception):
    """The engine raised on this request; the server answers INTERNAL (details only in its log)."""


@dataclass
class Result:
    verdict: Verdict
    batch_size: int


@dataclass
class _Job:
    prepared: Prepared
    future: asyncio.Future
    deadline: float | None  # time.monotonic() seconds
    enqueued: float = field(default_factory=time.monotonic)


class Batcher:
    def __init__(self, engine: Engine, max_batch_size: int, max_queue_size: int, max_queue_delay_s: float, observer=None):
        self.engine = engine
        self.max_batch_size = max_batch_size
        self.max_queue_size = max_queue_size
        self.max_queue_delay_s = max_queue_delay_s
        self.observer = observer  # metrics hook: called with (batch_size, queue depth) after each batch
        self._queue: deque[_Job] = deque()
        self._admitted = 0  # admitted and not yet in a running batch (preprocessing or queued)
        self._arrived = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"model-{engine.model_dir.name}")
        self._task: asyncio.Task | None = None
        self._closed = False

    # -- admission ------------------------------------------------------------------------------

    def admit(self) -> None:
        """Reserve a queue slot or raise QueueFull; pair with :meth:`submit` or :meth:`release`."""
        if self._closed:
            raise BatcherClosed()
        if self._admitted >= self.max_queue_size:
            raise QueueFull()
        self._admitted += 1

    def release(self) -> None:
        """Give back a slot reserved by :meth:`admit` for a request that will not be submitted."""
        self._admitted -= 1

    @property
    def depth(self) -> int:
        """Requests admitted and waiting (not yet on the engine)."""
        return self._admitted

    async def submit(self, prepared: Prepared, deadline: float | None) -> Result:
        """Queue an admitted request and wait for its verdict (or DeadlineExpired / an engine error)."""
        future = asyncio.get_running_loop().create_future()
        self._queue.append(_Job(prepared, future, deadline))
        self._arrived.set()
        return await future

    # -- the worker -----------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._work(), name="batcher")

    async def close(self) -> None:
        """Stop after the queued requests are done (the server drains before calling this)."""
        self._closed = True
        self._arrived.set()
        if self._task is not None:
            await self._task
        self._executor.shutdown(wait=True)

    async def _work(self) -> None:
        while True:
            if not self._queue:
                if self._closed:
                    return
                self._arrived.clear()
                await self._arrived.wait()
                continue
            await self._fill()
            jobs = self._take()
            if jobs:
                await self._run(jobs)

    async def _fill(self) -> None:
        """With a delay configured, wait (bounded) for a partial batch to fill."""
        if self.max_queue_delay_s <= 0 or len(self._queue) >= self.max_batch_size:
            return
        end = self._queue[0].enqueued + self.max_queue_delay_s
        while len(self._queue) < self.max_batch_size and not self._closed:
            remaining = end - time.monotonic()
            if remaining <= 0:
                return
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except asyncio.TimeoutError:
                return

    def _take(self) -> list[_Job]:
        jobs: list[_Job] = []
        now = time.monotonic()
        while self._queue and len(jobs) < self.max_batch_size:
            job = self._queue.popleft()
            self._admitted -= 1
            if job.future.done():  # the caller cancelled (or went away) while queued
                continue
            if job.deadline is not None and job.deadline <= now:
                job.future.set_exception(DeadlineExpired())
                continue
            jobs.append(job)
        return jobs

    async def _run(self, jobs: list[_Job]) -> None:
        loop = asyncio.get_running_loop()
        try:
            verdicts = await loop.run_in_executor(self._executor, self.engine.run, [j.prepared for j in jobs])
            results: list[Result | BaseException] = [Result(v, len(jobs)) for v in verdicts]
        except Exception:
            if len(jobs) == 1:
                log.exception("model %s: request %s failed", self.engine.model_dir.name, jobs[0].prepared.request.request_id)
                results = [EngineFailure()]
            else:
                log.exception("model %s: batch of %d failed; retrying each request alone", self.engine.model_dir.name, len(jobs))
                results = [await self._alone(job) for job in jobs]
        for job, result in zip(jobs, results):
            if job.future.done():
                continue
            if isinstance(result, BaseException):
                job.future.set_exception(result)
            else:
                job.future.set_result(result)
        if self.observer is not None:
            try:
                self.observer(len(jobs), self.depth)
            except Exception:  # a metrics hook must never stop the worker
                log.exception("batch observer failed")

    async def _alone(self, job: _Job) -> Result | BaseException:
        try:
            [verdict] = await asyncio.get_running_loop().run_in_executor(self._executor, self.engine.run, [job.prepared])
            return Result(verdict, 1)
        except Exception:
            log.exception("model %s: request %s failed alone", self.engine.model_dir.name, job.prepared.request.request_id)
            return EngineFailure()

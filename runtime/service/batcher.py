"""Dynamic batching for one model: concurrent requests coalesce into engine batches.

Policy (the knobs are ServerConfig's):
- **Admission**: at most ``max_queue_size`` requests wait (being preprocessed or queued); one more
  is refused at once with :class:`QueueFull`, never parked.
- **Batch formation**: when the engine is free, the worker takes up to ``max_batch_size`` queued
  requests, in arrival order, while the batch's padded size (rows x longest prompt) stays within
  ``max_batch_tokens``; a prompt too long to share that budget runs alone. Attention memory
  grows with rows x length^2, so this is what bounds one batch's memory: a 24 k-token prompt
  no longer pads seven short ones to 24 k. With ``max_queue_delay_ms`` > 0 and a partial batch
  it waits that long for more; with 0 it never waits.
- **Dropped at once**: a request whose caller goes away, or whose deadline passes, leaves the
  queue at that moment (a timer per deadline) and frees its slot; the latter gets
  :class:`DeadlineExpired`. Expired requests never hold slots that new callers are refused for.
- **Answered when complete**: each request of a batch is answered the moment its own answer is
  complete (``Engine.run``'s ``on_verdict``), while the batch goes on decoding the others; a
  verdict-only request does not wait for a rationale in the same batch (iteration-level batching).
- **Isolation**: if a batch raises, each of its requests not yet answered is retried alone so only
  the request that fails gets the error.
Model work runs on one dedicated thread; the event loop only moves futures.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from guardedge.runtime.engine import Engine, Prepared, fits_budget
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
    timer: asyncio.TimerHandle | None = None


class Batcher:
    def __init__(self, engine: Engine, max_batch_size: int, max_queue_size: int, max_queue_delay_s: float, observer=None,
                 max_batch_tokens: int = 0):
        self.engine = engine
        self.max_batch_size = max_batch_size
        self.max_batch_tokens = max_batch_tokens  # rows x longest prompt per batch; 0: no budget
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
        """Queue an admitted request and wait for its verdict (or DeadlineExpired / an engine error).

        If the caller goes away (this coroutine is cancelled) or the deadline passes while the
        request is queued, it leaves the queue and frees its slot right then.
        """
        loop = asyncio.get_running_loop()
        job = _Job(prepared, loop.create_future(), deadline)
        if self._closed:
            self._admitted -= 1
            raise BatcherClosed()
        if deadline is not None:
            job.timer = loop.call_later(max(0.0, deadline - time.monotonic()), self._expire, job)
        self._queue.append(job)
        self._arrived.set()
        try:
            return await job.future
        finally:
            self._dequeue(job)  # no-op once the worker took it

    def _expire(self, job: _Job) -> None:
        if self._dequeue(job) and not job.future.done():
            job.future.set_exception(DeadlineExpired())

    def _dequeue(self, job: _Job) -> bool:
        """Remove a job still waiting in the queue and free its slot; False if it was not there."""
        if job.timer is not None:
            job.timer.cancel()
        try:
            self._queue.remove(job)
        except ValueError:
            return False
        self._admitted -= 1
        return True

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

    def abandon(self) -> None:
        """Stop now: queued requests get BatcherClosed; a batch on the engine is not waited for
        (its thread cannot be interrupted; the server's drain does not wait on it)."""
        self._closed = True
        while self._queue:
            job = self._queue[0]
            self._dequeue(job)
            if not job.future.done():
                job.future.set_exception(BatcherClosed())
        if self._task is not None:
            self._task.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)

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
            job = self._queue[0]
            if jobs and not self._fits(jobs, job):
                break  # it leads the next batch, which starts as soon as this one is done
            self._dequeue(job)
            if job.future.done():  # the caller cancelled (or went away) while queued
                continue
            if job.deadline is not None and job.deadline <= now:
                job.future.set_exception(DeadlineExpired())
                continue
            jobs.append(job)
        return jobs

    def _fits(self, jobs: list[_Job], job: _Job) -> bool:
        """Whether ``job`` may join ``jobs`` within the padded-token budget (the engine's rule)."""
        return fits_budget([j.prepared for j in jobs], job.prepared, self.max_batch_tokens)

    async def _run(self, jobs: list[_Job]) -> None:
        loop = asyncio.get_running_loop()

        def deliver(row: int, verdict: Verdict) -> None:  # on the model thread, as each row completes
            loop.call_soon_threadsafe(_settle, jobs[row].future, Result(verdict, len(jobs)))

        run = functools.partial(self.engine.run, [j.prepared for j in jobs], on_verdict=deliver)
        try:
            verdicts = await loop.run_in_executor(self._executor, run)
            results: list[Result | BaseException | None] = [Result(v, len(jobs)) for v in verdicts]  # None: answered already
        except Exception:
            # Rows delivered before the failure are answered already (their callbacks ran first).
            left = sum(not job.future.done() for job in jobs)
            if len(jobs) == 1:
                log.exception("model %s: request %s failed", self.engine.model_dir.name, jobs[0].prepared.request.request_id)
                results = [EngineFailure()]
            else:
                log.exception("model %s: batch of %d failed; retrying each request not yet answered alone (%d)",
                              self.engine.model_dir.name, len(jobs), left)
                results = [None if job.future.done() else await self._alone(job) for job in jobs]
        for job, result in zip(jobs, results):
            if result is not None:
                _settle(job.future, result)
        if self.observer is not None:
            try:
                self.observer(len(jobs), self.depth)
            except Exception:  # a metrics hook must never stop the worker
                log.exception("batch observer failed")

    async def _alone(self, job: _Job) -> Result | BaseException:
        try:
            [verdict] = await asyncio.get_running_loop().run_in_executor(self._executor, functools.partial(self.engine.run, [job.prepared]))
            return Result(verdict, 1)
        except Exception:
            log.exception("model %s: request %s failed alone", self.engine.model_dir.name, job.prepared.request.request_id)
            return EngineFailure()


def _settle(future: asyncio.Future, result: Result | BaseException) -> None:
    """Answer a job once: a cancelled or already answered job is left as it is."""
    if future.done():
        return
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)

"""Preprocessing threads shared by the served models, each model in turn (issue 19, item 4).

    pool = FairPool(workers=2)
    result, waited = await pool.run("demo", fn, arg)    # on the event loop; fn runs on a worker thread
    pool.shutdown()

Every model has its own first-in-first-out queue; a free worker takes the oldest job of the next
model, in turn, that has one. With one shared queue, 32 large images for one model made a text call
for another wait 14.3 s behind them; now a job waits for at most one job per worker of each other
model ahead of it. ``waited`` is the time the job spent queued (the "preprocess wait" stage).

A job whose caller goes away (the awaiting task is cancelled) before a worker takes it leaves its
queue at once and never runs; one already running finishes on its thread (a thread cannot be
interrupted) and its result is dropped. Worker threads are daemon threads: a process that stops
does not wait for an image still decoding (docs/service.md, the drain bound).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass
class _Job:
    fn: Callable[..., Any]
    args: tuple
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future
    queued: float = field(default_factory=time.perf_counter)


class FairPool:
    def __init__(self, workers: int, name: str = "preprocess"):
        self._queues: OrderedDict[str, deque[_Job]] = OrderedDict()  # rotated: the next model to serve first
        self._cond = threading.Condition()
        self._closed = False
        self._threads = [threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True) for i in range(workers)]
        for thread in self._threads:
            thread.start()

    async def run(self, key: str, fn: Callable[..., Any], *args) -> tuple[Any, float]:
        """``fn(*args)`` on a worker, in ``key``'s turn; (its result, seconds it waited for a worker)."""
        loop = asyncio.get_running_loop()
        job = _Job(fn, args, loop, loop.create_future())
        with self._cond:
            if self._closed:
                raise RuntimeError("the preprocessing pool is shut down")
            self._queues.setdefault(key, deque()).append(job)
            self._cond.notify()
        try:
            return await job.future
        except asyncio.CancelledError:
            self._forget(key, job)
            raise
        finally:  # an exception's traceback holds this frame: it must not hold the job, whose future holds the exception
            del job

    def queued(self, key: str) -> int:
        with self._cond:
            return len(self._queues.get(key, ()))

    def shutdown(self) -> None:
        """Run nothing more; queued jobs are dropped (their callers are being answered by the drain)."""
        with self._cond:
            self._closed = True
            self._queues.clear()
            self._cond.notify_all()

    def _forget(self, key: str, job: _Job) -> None:
        with self._cond:
            queue = self._queues.get(key)
            if queue is not None and job in queue:
                queue.remove(job)

    def _next(self) -> _Job | None:
        """The next job, models in turn; None once shut down. Called holding the condition."""
        while not self._closed:
            for key, queue in self._queues.items():
                if queue:
                    self._queues.move_to_end(key)  # this model goes last in the turn
                    return queue.popleft()
            self._cond.wait()
        return None

    def _work(self) -> None:
        while True:
            with self._cond:
                job = self._next()
            if job is None:
                return
            waited = time.perf_counter() - job.queued
            try:
                result, error = job.fn(*job.args), None
            except BaseException as exc:  # handed to the awaiting coroutine
                result, error = None, exc
            try:
                job.loop.call_soon_threadsafe(_settle, job.future, (result, waited), error)
            except RuntimeError:  # the loop is closed: the process is stopping, nobody waits for this
                pass
            del job, result, error  # nothing of this job stays on the worker's frame


def _settle(future: asyncio.Future, result, error: BaseException | None) -> None:
    if future.done():  # the caller went away
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)

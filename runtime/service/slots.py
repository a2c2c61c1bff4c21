"""The models a server holds: one ModelSlot per model (engine, batcher, admission, the limits served), and loading.

    slot = await load_slot(spec, name, config, on_batch)   # load on a daemon thread, warm up, ready
    cost = slot.admit(request)                              # on arrival: a queue slot and the image's decoded bytes
    prepared = await slot.preprocess(request, pool, arrived, cost)   # the model's turn on the shared workers

A model loads on a daemon thread, so a process asked to stop while a model is still loading
exits rather than waiting for it. The served limits are the server's (``max_text_tokens`` may be
lower than the model's context), and ``ListModels`` reports them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from dataclasses import dataclass
from typing import Callable

import grpc

from guardedge.runtime.engine import Engine, EngineInfo, EngineOptions, Prepared, load_engine
from guardedge.runtime.errors import InvalidRequest, invalid
from guardedge.runtime.images import ImageLimits
from guardedge.runtime.requests import RequestLimits
from guardedge.runtime.service import convert, logs
from guardedge.runtime.service.admission import ByteBudget, image_cost
from guardedge.runtime.service.batcher import Batcher, BatcherClosed, QueueFull
from guardedge.runtime.service.config import ServerConfig
from guardedge.runtime.service.failures import SHUTTING_DOWN, Failure
from guardedge.runtime.service.workers import FairPool
from guardedge.v1 import guard_pb2 as pb


@dataclass
class ModelSlot:
    """One loaded model, its batcher and admission, and the limits this server enforces on it."""

    engine: Engine
    info: EngineInfo  # with the server's name and limits
    batcher: Batcher
    decoding: ByteBudget  # decoded image bytes admitted and not yet encoded (max_decoded_bytes)

    def admit(self, request: pb.ClassifyRequest) -> int:
        """Admit on arrival, before anything is parsed or decoded: a queue slot, and the decoded bytes
        of the request's image read from its header; Failure (RESOURCE_EXHAUSTED) at once otherwise.
        Returns the bytes reserved: give them and the slot back through :meth:`preprocess`, or
        :meth:`cancel` when the request goes no further."""
        name = self.info.name
        try:
            self.batcher.admit()
        except QueueFull:
            raise Failure.of(grpc.StatusCode.RESOURCE_EXHAUSTED, f"model {name!r} has {self.batcher.max_queue_size} "
                             "requests queued (max_queue_size); retry with backoff") from None
        except BatcherClosed:
            raise Failure.of(grpc.StatusCode.UNAVAILABLE, SHUTTING_DOWN) from None
        cost = image_cost(request)
        if not self.decoding.reserve(cost):
            self.batcher.release()
            raise Failure.of(grpc.StatusCode.RESOURCE_EXHAUSTED, f"model {name!r} has {self.decoding.in_flight} bytes of "
                             f"images to decode; this one needs {cost} more than max_decoded_bytes "
                             f"({self.decoding.limit}) allows; retry with backoff")
        return cost

    def cancel(self, cost: int) -> None:
        """Give back what :meth:`admit` reserved, for a request that is not preprocessed."""
        self.decoding.release(cost)
        self.batcher.release()

    async def preprocess(self, request: pb.ClassifyRequest, pool: FairPool, arrived: float, cost: int) -> Prepared:
        """Validate, decode and tokenize in this model's turn on the shared workers; the decoded bytes
        are given back when that is done, the queue slot if it fails (else the batcher takes it)."""
        try:
            prepared, waited = await pool.run(self.info.name, self.prepare, request)
        except BaseException:
            self.batcher.release()
            raise
        finally:
            self.decoding.release(cost)
        prepared.queued_at, prepared.preprocess_wait_s = arrived, waited
        return prepared

    def prepare(self, request: pb.ClassifyRequest) -> Prepared:
        """Validate, decode and tokenize (on a preprocessing thread); the timing covers all of it.

        A refusal raises a Failure with no context chain: the InvalidRequest, its traceback and the
        frames holding the request (its image bytes) are gone once it is raised."""
        start = time.perf_counter()
        problem = None
        try:
            prepared = self.engine.prepare(self.engine.parse(convert.request_to_dict(request), limits=self.info.limits))
            self._check_tokens(len(prepared.encoded.input_ids))
        except InvalidRequest as exc:
            problem = convert.bad_request(exc, request)
        if problem is not None:
            raise Failure(problem)
        prepared.preprocess_s = time.perf_counter() - start
        return prepared

    def _check_tokens(self, count: int) -> None:
        # The engine checks its own context; this is the server's (possibly lower) max_text_tokens.
        if count > self.info.max_text_tokens:
            raise invalid("messages", f"the prompt is {count} tokens; this server accepts at most {self.info.max_text_tokens} (max_text_tokens)")


def engine_options(config: ServerConfig) -> EngineOptions:
    limits = RequestLimits(image=ImageLimits(max_bytes=config.max_image_bytes, max_pixels=config.max_image_pixels))
    return EngineOptions(
        device=config.device,
        dtype=config.dtype,
        threshold=config.threshold if config.threshold >= 0 else None,
        max_batch_size=config.max_batch_size,
        progress=False,
        limits=limits,
        prefix_cache=config.prefix_cache,
    )


async def load_slot(spec: str, name: str, config: ServerConfig, on_batch: Callable[[int, int], None],
                    engine: Engine | None = None) -> ModelSlot:
    """Load ``spec`` (unless ``engine`` is given), start its batcher and warm it up through it."""
    if engine is None:
        engine = await _on_daemon_thread(lambda: _load_engine(spec, engine_options(config)))
    batcher = Batcher(engine, config.max_batch_size, config.max_queue_size, config.max_queue_delay_ms / 1000.0,
                      on_batch, config.max_batch_tokens)
    batcher.start()
    logs.adopt_library_loggers()  # loading configured the libraries' loggers: route them through ours
    # Warm up through the batcher: the first call pays one-time costs (allocator, kernels).
    batcher.admit()
    # A request the family accepts (LlavaGuard needs an image).
    await batcher.submit(engine.prepare(engine.parse(engine.family.warmup_request())), None)
    return ModelSlot(engine, served_info(engine.info(), name, config), batcher, ByteBudget(config.max_decoded_bytes))


def served_info(info: EngineInfo, name: str, config: ServerConfig) -> EngineInfo:
    """The engine as this server serves it: its name here, this server's limits."""
    tokens = min(info.max_text_tokens, config.max_text_tokens or info.max_text_tokens)
    return dataclasses.replace(info, name=name, limits=engine_options(config).limits, max_text_tokens=tokens,
                               max_batch_size=config.max_batch_size)


def _load_engine(spec: str, options: EngineOptions) -> Engine:
    logs.adopt_library_loggers()  # before transformers logs anything of its own
    return load_engine(spec, options)


async def _on_daemon_thread(fn):
    """Run ``fn`` on a daemon thread: a model still loading must not keep a stopping process alive."""
    loop = asyncio.get_running_loop()
    future = loop.create_future()

    def target() -> None:
        try:
            result = fn()
        except BaseException as exc:  # handed to the awaiting coroutine
            loop.call_soon_threadsafe(_settle, future, None, exc)
        else:
            loop.call_soon_threadsafe(_settle, future, result, None)

    threading.Thread(target=target, name="load-model", daemon=True).start()
    return await future


def _settle(future: asyncio.Future, result, exc) -> None:
    if future.done():
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)

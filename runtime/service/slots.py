"""The models a server holds: one ModelSlot per model (engine, batcher, the limits served), and loading.

    slot = await load_slot(spec, name, config, on_batch)   # load on a daemon thread, warm up, ready
    prepared = slot.prepare(request)                        # on a preprocessing thread

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

from guardedge.runtime.engine import Engine, EngineInfo, EngineOptions, Prepared, load_engine
from guardedge.runtime.errors import InvalidRequest, invalid
from guardedge.runtime.images import ImageLimits
from guardedge.runtime.requests import RequestLimits
from guardedge.runtime.service import convert, logs
from guardedge.runtime.service.batcher import Batcher
from guardedge.runtime.service.config import ServerConfig
from guardedge.runtime.service.failures import Failure
from guardedge.v1 import guard_pb2 as pb



@dataclass
class ModelSlot:
    """One loaded model, its batcher, and the limits this server enforces on it."""

    engine: Engine
    info: EngineInfo  # with the server's name and limits
    batcher: Batcher

    def prepare(self, request: pb.ClassifyRequest) -> Prepared:
        """Validate, decode and tokenize (on a preprocessing thread); the timing covers all of it."""
        start = time.perf_counter()
        try:
            prepared = self.engine.prepare(self.engine.parse(convert.request_to_dict(request), limits=self.info.limits))
            self._check_tokens(len(prepared.encoded.input_ids))
        except InvalidRequest as exc:
            raise Failure(convert.bad_request(exc, request)) from None
        prepared.queued_at, prepared.preprocess_s = start, time.perf_counter() - start
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
    return ModelSlot(engine, served_info(engine.info(), name, config), batcher)


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

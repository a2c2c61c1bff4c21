"""ClassifyStream: answer each request of a stream as it completes, and end every stream with a status.

The servicer (runtime/service/server.py) makes one :class:`StreamCall` per ClassifyStream call
and yields from :meth:`StreamCall.responses`:

    call = StreamCall(servicer.classify_item, metrics)
    async for response in call.responses(request_iterator, deadline):
        yield response

A reader task reads the stream and starts one task per request; responses are queued as they
complete, so a slow request does not hold back a fast one. The stream never hangs: it ends
when the caller half-closes and every request is answered; on an item the wire check refused
(malformed bytes), after answering what was pending, with INVALID_ARGUMENT; on a drain
(:meth:`StreamCall.drain`), after answering what was pending, with :class:`Drained`, which the
servicer answers UNAVAILABLE.

At most MAX_UNANSWERED requests of one stream are read and not yet answered to the caller: past
that the reader stops reading until the caller takes a response, so HTTP/2 flow control pushes
back on a caller that sends without reading, instead of the server buffering its answers.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import AsyncIterator, Awaitable, Callable

import grpc

from guardedge.runtime.errors import FieldViolation, InvalidRequest
from guardedge.runtime.service import convert
from guardedge.runtime.service.failures import Failure, bad_request_detail, stream_error
from guardedge.runtime.service.metrics import Metrics
from guardedge.runtime.service.wire import Rejected
from guardedge.v1 import guard_pb2 as pb

log = logging.getLogger("guardedge.server")
METHOD = "ClassifyStream.item"  # the request counter's label for each request on a stream

MAX_UNANSWERED = 64  # requests read from one stream and not yet answered to its caller
_END, _DRAIN = object(), object()  # queue sentinels: the reader finished; the server is draining

Classify = Callable[[pb.ClassifyRequest, "float | None"], Awaitable[pb.ClassifyResponse]]


class Drained(Exception):
    """The server is draining: the stream answered its pending requests and ends."""


@dataclass(frozen=True)
class _Stop:
    """Queue item: the reader hit an item it cannot answer; the stream ends with this failure."""

    failure: Exception


class StreamCall:
    """One ClassifyStream call. ``classify`` answers one request or raises Failure."""

    def __init__(self, classify: Classify, metrics: Metrics):
        self._classify = classify
        self._metrics = metrics
        self._out: asyncio.Queue = asyncio.Queue()
        self._window = asyncio.Semaphore(MAX_UNANSWERED)  # one unit per request read and not yet answered

    def drain(self) -> None:
        """Stop reading, answer what is pending, then end with Drained."""
        self._out.put_nowait(_DRAIN)

    async def responses(self, request_iterator, deadline: float | None) -> AsyncIterator[pb.ClassifyResponse]:
        """Each answer as it completes; raises Drained or a Failure when the stream must end early."""
        tasks: set[asyncio.Task] = set()
        reader = asyncio.get_running_loop().create_task(self._read(request_iterator, deadline, tasks))
        try:
            while (item := await self._out.get()) is not _END:
                if item is _DRAIN or isinstance(item, _Stop):
                    reader.cancel()
                    async for late in self._finish(tasks):
                        yield late
                    raise item.failure if isinstance(item, _Stop) else Drained()
                yield item
                self._window.release()  # the caller took this answer: one more request may be read
            await reader  # re-raise a reading error, if any
        finally:
            reader.cancel()
            for task in list(tasks):
                task.cancel()

    async def _finish(self, tasks: set[asyncio.Task]) -> AsyncIterator[pb.ClassifyResponse]:
        """The answers of the requests still pending when the stream must end."""
        await asyncio.gather(*list(tasks), return_exceptions=True)
        while not self._out.empty():
            if isinstance(late := self._out.get_nowait(), pb.ClassifyResponse):
                yield late

    async def _read(self, request_iterator, deadline: float | None, tasks: set[asyncio.Task]) -> None:
        """Read the stream, start answering each item; always ends by queueing _END or a _Stop."""
        pending: set[str] = set()
        try:
            async for request in request_iterator:
                await self._window.acquire()
                if isinstance(request, Rejected):
                    await self._out.put(_Stop(self._refused(request)))
                    return
                problem = _id_problem(request.request_id, pending)
                if problem:
                    failure = Failure(convert.bad_request(InvalidRequest(FieldViolation("request_id", problem))))
                    await self._out.put(stream_error(request.request_id, failure))
                    continue
                pending.add(request.request_id)
                task = asyncio.get_running_loop().create_task(self._answer(request, deadline, pending))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            while tasks:
                await asyncio.gather(*list(tasks))
            await self._out.put(_END)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # reading failed (transport error): end the stream rather than hang it
            log.warning("stream read failed: %s", type(exc).__name__, extra={"fields": {"code": "UNKNOWN"}})
            await self._out.put(_Stop(Failure.of(grpc.StatusCode.UNKNOWN, f"reading the request stream failed ({type(exc).__name__})")))

    async def _answer(self, request: pb.ClassifyRequest, deadline: float | None, pending: set[str]) -> None:
        try:
            await self._out.put(await self._item(request, deadline))
        finally:
            pending.discard(request.request_id)

    async def _item(self, request: pb.ClassifyRequest, deadline: float | None) -> pb.ClassifyResponse:
        try:
            response = await self._classify(request, deadline)
            self._metrics.requests.labels(METHOD, "OK").inc()
            return response
        except Failure as failure:
            self._metrics.requests.labels(METHOD, failure.code.name).inc()
            return stream_error(request.request_id, failure)

    def _refused(self, request: Rejected) -> Failure:
        log.info("stream item refused; ending the stream", extra={"fields": {"code": "INVALID_ARGUMENT", "error": request.status.message}})
        self._metrics.requests.labels(METHOD, "INVALID_ARGUMENT").inc()
        message = f"a stream item is not a valid request, so the stream ends (items before it were answered): {request.status.message}"
        return Failure(convert.status(grpc.StatusCode.INVALID_ARGUMENT, message, bad_request_detail(request.status)))


def _id_problem(request_id: str, pending: set[str]) -> str:
    if not request_id:
        return "required on ClassifyStream, to match each response to its request"
    if request_id in pending:
        return f"{request_id!r} is already pending on this stream (this duplicate is refused; the first one is answered)"
    return ""

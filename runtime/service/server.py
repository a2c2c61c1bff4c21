"""The gRPC server: GuardService on grpc.aio, with health, reflection, batching, auth, metrics.

    guardedge serve --model demo --port 50051            # the CLI (runtime/cli.py)
    server = GuardServer(load_config(...)); await server.start(); await server.serve_until_stopped()

Lifecycle: bind and answer health (NOT_SERVING) at once; load each model on a background thread
(runtime/service/slots.py); warm each up with one classification; then SERVING. On SIGTERM/SIGINT
(``stop``): NOT_SERVING, new classify calls get UNAVAILABLE while the listener stays open (health
checks see the state), requests in flight finish within ``grace_seconds``, open streams
(runtime/service/stream.py) answer what they read and end with UNAVAILABLE, then the port closes
without resetting a call (runtime/service/closing.py) and the process exits 0.
docs/service.md has the operator's view.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from guardedge.runtime.engine import Engine
from guardedge.runtime.errors import GuardError
from guardedge.runtime.service import convert
from guardedge.runtime.service.auth import TokenAuth, server_credentials
from guardedge.runtime.service.batcher import BatcherClosed, DeadlineExpired, EngineFailure
from guardedge.runtime.service.closing import CloseGate
from guardedge.runtime.service.config import ConfigError, ServerConfig, model_name
from guardedge.runtime.service.failures import SHUTDOWN_UNANSWERED, SHUTTING_DOWN, STREAM_DRAINED, Failure, details
from guardedge.runtime.service.health import BoundedHealth
from guardedge.runtime.service.memory import Trimmer
from guardedge.runtime.service.metrics import Metrics

if TYPE_CHECKING:
    from guardedge.runtime.service.http_api import HttpApi
from guardedge.runtime.service.slots import ModelSlot, engine_options, load_slot
from guardedge.runtime.service.stream import Drained, StreamCall
from guardedge.runtime.service.wire import Rejected, WireLimits, register
from guardedge.runtime.service.workers import FairPool
from guardedge.v1 import guard_pb2 as pb
from guardedge.v1 import guard_pb2_grpc as pb_grpc

log = logging.getLogger("guardedge.server")
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["GuardService"].full_name
HEALTH_SERVICES = ("", SERVICE_NAME)


class GuardServicer(pb_grpc.GuardServiceServicer):
    """Translates GuardService calls to the models' batchers and failures to statuses."""

    def __init__(self, config: ServerConfig, metrics: Metrics):
        self.config = config
        self.metrics = metrics
        self.expected = [model_name(m) for m in config.models]  # known before loading: NOT_FOUND vs UNAVAILABLE
        self.slots: dict[str, ModelSlot] = {}
        self.draining = False
        self.in_flight = 0  # requests being answered (unary calls and stream items)
        self.calls: set[asyncio.Task] = set()  # the tasks answering them, abandoned when the grace runs out
        self.abandoning = False
        self.gate = CloseGate()  # parks calls that arrive while the port closes
        self.trimmer = Trimmer()  # gives the memory of answered requests back to the OS (memory.py)
        self.streams: set[StreamCall] = set()  # open ClassifyStream calls, ended on a drain
        self.pool = FairPool(config.preprocess_workers)  # shared by the models, each in turn

    # -- RPCs -----------------------------------------------------------------------------------

    async def Classify(self, request: pb.ClassifyRequest | Rejected, context: grpc.aio.ServicerContext) -> pb.ClassifyResponse:
        self.gate.arrived()
        deadline = _deadline(context)
        code = grpc.StatusCode.CANCELLED  # if the caller goes away mid-call (or its deadline passes: _ended)
        try:
            await self.gate.hold(deadline)
            response = await self._classify(request, deadline)
            code = grpc.StatusCode.OK
            return response
        except Failure as failure:
            code, status = failure.code, failure.status
        finally:
            self.gate.answered()
            self.metrics.requests.labels("Classify", _ended(code, deadline).name).inc()
        # gRPC keeps the exception abort() raises in a reference cycle with the call until the garbage
        # collector runs. So it is raised outside the except block (no chain back to the Failure and
        # its frames) and without the request on this frame: nothing of the request hangs on it.
        del request
        await context.abort(code, status.message, trailing_metadata=details(status))
        raise AssertionError("unreachable: context.abort() raises")  # grpc is untyped: abort's NoReturn is not known

    async def ClassifyStream(self, request_iterator, context: grpc.aio.ServicerContext):
        self.gate.arrived()
        call = StreamCall(self._classify, self.metrics)
        code = grpc.StatusCode.CANCELLED  # if the caller goes away mid-stream
        try:
            if self.draining:  # a stream opened during a drain ends at once, not request by request
                await self.gate.hold(_deadline(context))
                raise Drained()
            self.streams.add(call)
            async for response in call.responses(request_iterator, _deadline(context)):
                yield response
            code = grpc.StatusCode.OK
        except Drained:
            code = grpc.StatusCode.UNAVAILABLE
            await context.abort(code, STREAM_DRAINED)
        except Failure as failure:
            code = failure.code
            await context.abort(code, failure.status.message, trailing_metadata=details(failure.status))
        finally:
            self.gate.answered()
            self.streams.discard(call)
            self.metrics.requests.labels("ClassifyStream", code.name).inc()

    async def ListModels(self, request: pb.ListModelsRequest | Rejected, context: grpc.aio.ServicerContext) -> pb.ListModelsResponse:
        self.gate.arrived()
        await self.gate.hold(_deadline(context))
        if isinstance(request, Rejected):
            self.metrics.requests.labels("ListModels", "INVALID_ARGUMENT").inc()
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.status.message, trailing_metadata=details(request.status))
        if self.draining or len(self.slots) < len(self.expected):
            self.metrics.requests.labels("ListModels", "UNAVAILABLE").inc()
            await context.abort(grpc.StatusCode.UNAVAILABLE, self._unavailable_reason())
        self.metrics.requests.labels("ListModels", "OK").inc()
        return pb.ListModelsResponse(
            models=[convert.model_info(s.info, name == self.expected[0]) for name, s in self.slots.items()]
        )

    # -- the drain ------------------------------------------------------------------------------

    def end_streams(self) -> None:
        """Ask every open ClassifyStream to answer what it has pending and end (UNAVAILABLE)."""
        for call in self.streams:
            call.drain()

    async def abandon(self) -> None:
        """The grace ran out: every request still being answered gets UNAVAILABLE now (at most 1 s)."""
        self.abandoning = True
        tasks = list(self.calls)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=1.0)

    # -- one request ----------------------------------------------------------------------------

    async def _classify(self, request: pb.ClassifyRequest | Rejected, deadline: float | None) -> pb.ClassifyResponse:
        if isinstance(request, Rejected):  # bytes the wire check refused: no request to work on
            log.info("request refused", extra={"fields": {"code": "INVALID_ARGUMENT", "error": request.status.message}})
            raise Failure(request.status)
        self.in_flight += 1
        # Not kept in a local: a traceback through this frame would hold the task, and the task the traceback.
        self.calls.add(_current_task())
        try:
            return await self._classify_logged(request, deadline)
        finally:
            self.in_flight -= 1
            self.calls.discard(asyncio.current_task())

    async def _classify_logged(self, request: pb.ClassifyRequest, deadline: float | None) -> pb.ClassifyResponse:
        start = time.perf_counter()
        fields = {"request_id": request.request_id, "model": request.model or self.expected[0]}
        try:
            response = await self._run(request, deadline, start)
        except Failure as failure:
            log.info("request failed", extra={"fields": {**fields, "code": failure.code.name, "error": failure.status.message[:500],
                                                         "total_ms": round((time.perf_counter() - start) * 1e3, 3)}})
            raise
        except asyncio.CancelledError:
            if self.abandoning:  # the drain's grace ran out: a retryable answer, not a reset
                task = asyncio.current_task()
                if task is not None:
                    task.uncancel()  # this cancellation is answered; the call goes on to send its status
                log.info("request abandoned", extra={"fields": {**fields, "code": "UNAVAILABLE"}})
                raise Failure.of(grpc.StatusCode.UNAVAILABLE, SHUTDOWN_UNANSWERED) from None
            code = _ended(grpc.StatusCode.CANCELLED, deadline).name
            log.info("request cancelled" if code == "CANCELLED" else "request expired", extra={"fields": {**fields, "code": code}})
            raise
        except Exception:
            log.exception("request failed: internal error", extra={"fields": {**fields, "code": "INTERNAL"}})
            raise Failure.of(grpc.StatusCode.INTERNAL, f"internal error (request_id={request.request_id!r}); the server log has details") from None
        t = response.timings
        log.info("classified", extra={"fields": {
            **fields, "code": "OK", "verdict": pb.Verdict.Name(response.verdict), "batch_size": response.batch_size,
            "queue_ms": round(t.queue_seconds * 1e3, 3), "preprocess_wait_ms": round(t.preprocess_wait_seconds * 1e3, 3),
            "preprocess_ms": round(t.preprocess_seconds * 1e3, 3), "inference_ms": round(t.inference_seconds * 1e3, 3),
            "total_ms": round(t.total_seconds * 1e3, 3), "request_bytes": request.ByteSize(),
        }})
        return response

    async def _run(self, request: pb.ClassifyRequest, deadline: float | None, start: float) -> pb.ClassifyResponse:
        slot = self._slot(request.model)
        cost = slot.admit(request)  # on arrival: refused at once, before anything is parsed or decoded
        prepared = await slot.preprocess(request, self.pool, start, cost)
        outcome = None
        try:
            result = await slot.batcher.submit(prepared, deadline)
        except DeadlineExpired:
            outcome = (grpc.StatusCode.DEADLINE_EXCEEDED, "the deadline passed while the request was queued")
        except BatcherClosed:
            outcome = (grpc.StatusCode.UNAVAILABLE, SHUTDOWN_UNANSWERED)
        except EngineFailure:
            outcome = (grpc.StatusCode.INTERNAL, f"the model failed on this request (request_id={request.request_id!r}); the server log has details")
        if outcome is not None:
            raise Failure.of(*outcome)
        response = convert.verdict_to_response(result.verdict, slot.info, result.batch_size, time.perf_counter() - start)
        self._observe(slot.info.name, response.timings)
        return response

    def _slot(self, name: str) -> ModelSlot:
        name = name or self.expected[0]
        if self.draining:
            raise Failure.of(grpc.StatusCode.UNAVAILABLE, SHUTTING_DOWN)
        if name not in self.expected:
            raise Failure.of(grpc.StatusCode.NOT_FOUND, f"model {name!r} is not served here; served: {', '.join(self.expected)}")
        if name not in self.slots:
            raise Failure.of(grpc.StatusCode.UNAVAILABLE, f"model {name!r} is still loading")
        return self.slots[name]

    def _unavailable_reason(self) -> str:
        return SHUTTING_DOWN if self.draining else "models are still loading"

    def _observe(self, model: str, t: pb.Timings) -> None:
        for stage, seconds in (("queue", t.queue_seconds), ("preprocess_wait", t.preprocess_wait_seconds),
                               ("preprocess", t.preprocess_seconds), ("inference", t.inference_seconds),
                               ("total", t.total_seconds)):
            self.metrics.stage_seconds.labels(model, stage).observe(seconds)

    def on_batch(self, model: str):
        def observe(size: int, depth: int) -> None:
            self.metrics.batch_size.labels(model).observe(size)

        return observe


def host_port(host: str, port: int) -> str:
    """``host:port`` for gRPC; an IPv6 literal (``::1``) needs brackets, or the port is ambiguous."""
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


def _deadline(context: grpc.aio.ServicerContext) -> float | None:
    remaining = context.time_remaining()
    return None if remaining is None else time.monotonic() + remaining


def _ended(code: grpc.StatusCode, deadline: float | None) -> grpc.StatusCode:
    """How a call ended, for the counters and logs: gRPC cancels a call whose deadline passed, and
    that is DEADLINE_EXCEEDED, not a caller who went away (CANCELLED)."""
    # gRPC's clock and ours differ by the moments between its deadline and the handler's start.
    if code == grpc.StatusCode.CANCELLED and deadline is not None and time.monotonic() >= deadline - 0.05:
        return grpc.StatusCode.DEADLINE_EXCEEDED
    return code




class GuardServer:
    """One server process: gRPC endpoint, models, health, metrics; start, serve, drain."""

    def __init__(self, config: ServerConfig, engines: dict[str, Engine] | None = None):
        self.config = config
        self.metrics = Metrics()
        self.servicer = GuardServicer(config, self.metrics)
        self.health = BoundedHealth(HEALTH_SERVICES)
        self._engines = engines  # preloaded (tests, embedding); otherwise loaded from config.models
        self._server: grpc.aio.Server | None = None
        self._stopping = asyncio.Event()
        self.port = 0
        self.metrics_port = 0
        self.http_port = 0
        self.http: HttpApi | None = None  # the HTTP API (runtime/service/http_api.py) when config.http_port >= 0
        self.ready = asyncio.Event()
        self.failed: BaseException | None = None

    async def start(self) -> int:
        """Bind, start answering (health NOT_SERVING), begin loading; returns the bound port."""
        interceptors = [TokenAuth(self.config.tokens, self._denied)] if self.config.auth_enabled else []
        size = self.config.max_message_bytes
        self._server = grpc.aio.server(
            interceptors=interceptors,
            options=[("grpc.max_receive_message_length", size), ("grpc.max_send_message_length", size), ("grpc.so_reuseport", 0)],
        )
        register(self.servicer, self._server, WireLimits(max_messages=engine_options(self.config).limits.max_messages),
                 received=self.servicer.trimmer.note)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        reflection.enable_server_reflection((SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME), self._server)
        for service in HEALTH_SERVICES:
            await self.health.set(service, health_pb2.HealthCheckResponse.NOT_SERVING)
        address = host_port(self.config.host, self.config.port)
        try:
            if self.config.tls_enabled:
                creds = server_credentials(self.config.tls_cert, self.config.tls_key, self.config.tls_client_ca)
                self.port = self._server.add_secure_port(address, creds)
            else:
                self.port = self._server.add_insecure_port(address)
        except RuntimeError as exc:  # grpc's "Failed to bind": the port is taken or the host is not local
            raise ConfigError(f"cannot listen on {address} (host/port): the port is in use or the address is not on this machine ({exc})") from None
        if self.config.metrics_port >= 0:  # before serving: a taken metrics port fails the start cleanly
            self.metrics_port = await self._serve_metrics()
        if self.config.http_port >= 0:
            self.http_port = await self._serve_http()
        await self._server.start()
        if self.config.port_file:
            Path(self.config.port_file).write_text(f"{self.port}\n")
        log.info("listening", extra={"fields": {
            "address": host_port(self.config.host, self.port), "tls": self.config.tls_enabled, "mtls": bool(self.config.tls_client_ca),
            "auth": self.config.auth_enabled, "metrics_port": self.metrics_port if self.config.metrics_port >= 0 else None,
            "http_port": self.http_port if self.config.http_port >= 0 else None,
        }})
        self.servicer.trimmer.start()
        asyncio.get_running_loop().create_task(self._load_all(), name="load-models")
        return self.port

    async def _serve_metrics(self) -> int:
        try:
            return await self.metrics.serve(self.config.metrics_host, self.config.metrics_port,
                                            ready=lambda: self.ready.is_set() and not self.servicer.draining)
        except OSError as exc:
            address = host_port(self.config.metrics_host, self.config.metrics_port)
            raise ConfigError(f"cannot serve metrics on {address} (metrics_host/metrics_port): {exc.strerror or exc}") from None

    async def _serve_http(self) -> int:
        from guardedge.runtime.service.http_api import HttpApi  # aiohttp's routes only when the API is on

        self.http = HttpApi(self.servicer, self.config, ready=lambda: self.ready.is_set() and not self.servicer.draining)
        try:
            return await self.http.start()
        except OSError as exc:
            self.http = None
            await self.metrics.stop()
            address = host_port(self.config.host, self.config.http_port)
            raise ConfigError(f"cannot serve the HTTP API on {address} (host/http_port): {exc.strerror or exc}") from None

    async def _load_all(self) -> None:
        try:
            for spec, name in zip(self.config.models, self.servicer.expected):
                await self._load(spec, name)
            for service in HEALTH_SERVICES:
                await self.health.set(service, health_pb2.HealthCheckResponse.SERVING)
            self.ready.set()
            log.info("serving", extra={"fields": {"models": list(self.servicer.slots)}})
        except Exception as exc:  # a server that cannot load its model must not linger half-alive
            self.failed = exc
            log.error("model loading failed: %s", exc, exc_info=not isinstance(exc, GuardError))
            self._stopping.set()

    async def _load(self, spec: str, name: str) -> None:
        started = time.perf_counter()
        engine = self._engines.get(name) if self._engines else None
        slot = await load_slot(spec, name, self.config, self.servicer.on_batch(name), engine)
        self.servicer.slots[name] = slot
        self.metrics.queue_depth.labels(name).set_function(lambda: slot.batcher.depth)  # read at scrape time
        self.metrics.model_memory.labels(name, slot.info.variant).set(slot.info.memory_bytes)
        self.metrics.model_ready.labels(name).set(1)
        log.info("model ready", extra={"fields": {"model": name, "variant": slot.info.variant, "memory_bytes": slot.info.memory_bytes,
                                                  "load_s": round(time.perf_counter() - started, 3)}})

    def _denied(self, method: str) -> None:
        self.metrics.requests.labels(method.rsplit("/", 1)[-1], "UNAUTHENTICATED").inc()

    def request_stop(self) -> None:
        """Ask the server to drain and stop (signal handlers call this)."""
        self._stopping.set()

    async def serve_until_stopped(self) -> None:
        await self._stopping.wait()
        await self.stop()

    async def stop(self) -> None:
        """Drain: NOT_SERVING, refuse new calls, let calls in flight finish within the grace period.

        The gRPC server keeps accepting while requests in flight finish, so health checks see
        NOT_SERVING and new classify calls get a clear UNAVAILABLE. When they are done, or the
        grace runs out, open streams end with UNAVAILABLE and whatever is still being answered
        gets UNAVAILABLE too (abandoned, never reset); then the port closes without resetting a
        call (closing.py), within about 2 s. Model or decoding work still running on threads is
        not waited for: the process exits within grace_seconds + 3 s whatever they are doing.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.grace_seconds
        log.info("draining", extra={"fields": {"grace_seconds": self.config.grace_seconds, "in_flight": self.servicer.in_flight}})
        self.servicer.draining = True
        await self.health.enter_graceful_shutdown()
        while self.servicer.in_flight and loop.time() < deadline:
            await asyncio.sleep(0.01)
        self.servicer.end_streams()
        if self.servicer.in_flight:
            log.warning("grace period over; abandoning requests", extra={"fields": {"in_flight": self.servicer.in_flight}})
            self.servicer.gate.park()  # callers of abandoned calls send again at once: park those calls
            await self.servicer.abandon()
        for name in self.servicer.slots:
            self.metrics.model_ready.labels(name).set(0)
        if self._server is not None:
            await self.servicer.gate.close(self._server)
        if self.http is not None:  # its requests were answered with the others (servicer.in_flight)
            await self.http.stop()
        for slot in self.servicer.slots.values():
            slot.batcher.abandon()
        self.servicer.pool.shutdown()
        await self.servicer.trimmer.stop()
        await self.metrics.stop()
        log.info("stopped")


async def serve(config: ServerConfig) -> int:
    """Run until SIGTERM/SIGINT; exit status 0 after a clean drain, 2 if a model cannot be loaded
    (a configuration problem: restarting will not help), 1 if loading failed otherwise."""
    server = GuardServer(config)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, server.request_stop)
    await server.start()
    await server.serve_until_stopped()
    if server.failed is None:
        return 0
    return 2 if isinstance(server.failed, GuardError) else 1


def _current_task() -> asyncio.Task:
    task = asyncio.current_task()
    assert task is not None, "called by a coroutine that runs in a task (a gRPC handler)"
    return task

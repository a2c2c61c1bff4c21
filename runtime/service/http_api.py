"""The HTTP API (``guardedge serve --http-port N``): OpenAI moderation, guardedge's JSON, Llama Stack shields.

    POST /v1/moderations        OpenAI's moderation request and response (runtime/service/moderation.py)
    POST /v1/classify           guardedge's request dict (the JSON ``classify --input`` reads, plus "model")
                                -> the JSON ``guardedge classify --json`` prints: Classify, field for field
    POST /v1/safety/run-shield  Llama Stack / OGX: {shield_id, messages, params} -> {violation}
    GET  /v1/models             the loaded guards (OpenAI's list shape, plus family and default)
    GET  /healthz, /readyz      as on the metrics port: up; loaded and not draining

Every route but the probes is what gRPC's GuardService is, on the same event loop (aiohttp,
docs/decisions/0011 and 0018): the same servicer answers each request (admission on arrival,
preprocessing workers, batchers, logs, stage metrics, the drain), so the limits, tokens
(``Authorization: Bearer``) and TLS of the gRPC port hold here too. A token is checked before the
body is read; the body's size, arrival time and JSON structure before it is parsed
(runtime/service/http_body.py); counts and encoded image sizes before anything is decoded
(runtime/service/http_requests.py). A deadline comes from ``X-Request-Timeout`` (seconds) or the
OpenAI SDK's ``X-Stainless-Read-Timeout``, whichever is shorter.

Errors are JSON in OpenAI's shape with gRPC's: ``{"error": {"message", "type", "param", "code":
"INVALID_ARGUMENT", "field_violations": [{"field", "description"}]}}``, the violations those of
gRPC's google.rpc.BadRequest, the HTTP status the code's (STATUS).
"""

from __future__ import annotations

import asyncio
import logging
import math
import ssl
import time
from typing import Callable

import grpc
from aiohttp import web

from guardedge.runtime.errors import InvalidRequest, invalid
from guardedge.runtime.service import convert, http_body, moderation
from guardedge.runtime.service.auth import TokenAuth
from guardedge.runtime.service.client import response_to_json
from guardedge.runtime.service.config import ServerConfig
from guardedge.runtime.service.failures import Failure, bad_request_detail
from guardedge.runtime.service.http_body import BodyRefused, read_json
from guardedge.runtime.service.http_requests import shield_request, to_classify
from guardedge.runtime.service.httpd import HttpServer, add_probes
from guardedge.runtime.service.slots import engine_options
from guardedge.v1 import guard_pb2 as pb

log = logging.getLogger("guardedge.server")
C = grpc.StatusCode
STATUS = {C.INVALID_ARGUMENT: 400, C.UNAUTHENTICATED: 401, C.PERMISSION_DENIED: 403, C.NOT_FOUND: 404,
          C.RESOURCE_EXHAUSTED: 429, C.CANCELLED: 499, C.INTERNAL: 500, C.UNIMPLEMENTED: 501,
          C.UNAVAILABLE: 503, C.DEADLINE_EXCEEDED: 504}
TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error", 408: "timeout",
         413: "invalid_request_error", 429: "rate_limit_error", 503: "service_unavailable", 504: "timeout"}
TIMEOUT_HEADERS = ("X-Request-Timeout", "X-Stainless-Read-Timeout")
SHIELD_MESSAGE = "I can't answer that. Can I help with something else?"  # Llama Stack's own refusal text
PROBES = ("/healthz", "/readyz")


class HttpApi:
    """The HTTP API's application and port, answering through ``servicer`` (server.py's GuardServicer)."""

    def __init__(self, servicer, config: ServerConfig, ready: Callable[[], bool]):
        self.servicer, self.config = servicer, config
        self.limits = engine_options(config).limits
        self.auth = TokenAuth(config.tokens) if config.auth_enabled else None
        self.app = web.Application(client_max_size=config.max_message_bytes, middlewares=[self._guard])
        self.app.router.add_post("/v1/moderations", self.moderations)
        self.app.router.add_post("/v1/classify", self.classify)
        self.app.router.add_post("/v1/safety/run-shield", self.run_shield)
        self.app.router.add_get("/v1/models", self.models)
        add_probes(self.app, ready)
        self.http = HttpServer(config.host, config.http_port, self.app, ssl=ssl_context(config))

    async def start(self) -> int:
        return await self.http.start()

    async def stop(self) -> None:
        await self.http.stop()

    # -- routes ---------------------------------------------------------------------------------

    async def moderations(self, request: web.Request) -> web.Response:
        deadline = _deadline(request)
        body = await self._body(request, deadline)
        requests, kinds = moderation.requests(body)
        strings = isinstance(body.get("input"), list) and all(isinstance(i, str) for i in body["input"])
        model = _model(body, "model")
        try:
            batch = await self._convert(request, [lambda r=r: to_classify(r, model, self.limits) for r in requests])
            for i, item in enumerate(batch):
                item.request_id = _request_id(request, i if len(batch) > 1 else None)
            answers = await self._answer(batch, deadline)
        except (InvalidRequest, Failure) as exc:
            index = _index(exc)
            raise _renamed(exc, lambda field: moderation.field_name(field, index, strings)) from None
        family = self.servicer.slots[answers[0].model].engine.family
        mapping = getattr(family, "moderation_categories", {})
        return web.json_response(moderation.response(answers, mapping, kinds, answers[0].model))

    async def classify(self, request: web.Request) -> web.Response:
        deadline = _deadline(request)
        body = await self._body(request, deadline)
        model = _model(body, "model")
        [item] = await self._convert(request, [lambda: to_classify(body, model, self.limits)])
        item.request_id = item.request_id or _request_id(request)
        [answer] = await self._answer([item], deadline)
        return web.json_response(response_to_json(answer))

    async def run_shield(self, request: web.Request) -> web.Response:
        deadline = _deadline(request)
        body = await self._body(request, deadline)
        shield, obj = shield_request(body)
        [item] = await self._convert(request, [lambda: to_classify(obj, shield, self.limits)])
        item.request_id = _request_id(request)
        [answer] = await self._answer([item], deadline)
        if answer.verdict == pb.VERDICT_SAFE:
            return web.json_response({"violation": None})
        codes = ",".join(answer.violated_categories) if answer.verdict == pb.VERDICT_UNSAFE else "unparseable"
        return web.json_response({"violation": {"violation_level": "error", "user_message": SHIELD_MESSAGE,
                                                "metadata": {"violation_type": codes, "guardedge": response_to_json(answer)}}})

    async def models(self, request: web.Request) -> web.Response:
        if self.servicer.draining or len(self.servicer.slots) < len(self.servicer.expected):
            raise Failure.of(C.UNAVAILABLE, self.servicer._unavailable_reason())
        default = self.servicer.expected[0]
        return web.json_response({"object": "list", "data": [
            {"id": name, "object": "model", "owned_by": "guardedge", "family": slot.info.family,
             "variant": slot.info.variant, "is_default": name == default} for name, slot in self.servicer.slots.items()]})

    # -- the path every route shares ------------------------------------------------------------

    async def _body(self, request: web.Request, deadline: float | None) -> dict:
        seconds = http_body.BODY_SECONDS  # read here, not bound at import: tests shorten it
        if deadline is not None:
            seconds = min(seconds, max(0.0, deadline - time.monotonic()))
        body = await read_json(request, self.config.max_message_bytes, seconds)
        if not isinstance(body, dict):
            raise invalid("request", f"must be a JSON object, got {type(body).__name__}")
        return body

    async def _convert(self, request: web.Request, builds: list) -> list[pb.ClassifyRequest]:
        """Run the request builders (base64 decoding): on a worker thread for a large body."""
        if (request.content_length or 0) > 256 * 1024:
            return await asyncio.to_thread(_build_all, builds)
        return _build_all(builds)

    async def _answer(self, batch: list[pb.ClassifyRequest], deadline: float | None) -> list[pb.ClassifyResponse]:
        """Each request through the servicer, concurrently; the first failure cancels the rest."""
        async def one(index: int, item: pb.ClassifyRequest) -> pb.ClassifyResponse:
            try:
                return await self.servicer._classify(item, deadline)
            except Failure as failure:
                failure.index = index  # which input, for the field names of a moderation array
                raise

        tasks = [asyncio.ensure_future(one(i, item)) for i, item in enumerate(batch)]
        try:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            return await asyncio.wait_for(asyncio.gather(*tasks), remaining)
        except asyncio.TimeoutError:
            raise Failure.of(C.DEADLINE_EXCEEDED, "the deadline (X-Request-Timeout) passed before the answer") from None
        finally:
            for task in tasks:
                task.cancel()

    @web.middleware
    async def _guard(self, request: web.Request, handler) -> web.StreamResponse:
        if request.path in PROBES:
            return await handler(request)
        route = request.path if request.match_info.route.resource is not None else "unknown"
        if self.auth is not None and not self.auth.allowed((("authorization", request.headers.get("Authorization", "")),)):
            return self._refuse(route, 401, C.UNAUTHENTICATED, "missing or invalid bearer token (header 'Authorization: Bearer <token>')")
        try:
            response = await handler(request)
        except Failure as failure:
            return self._error(route, failure.status)
        except InvalidRequest as exc:
            return self._error(route, convert.bad_request(exc))
        except BodyRefused as exc:
            code = {408: C.DEADLINE_EXCEEDED, 413: C.RESOURCE_EXHAUSTED}.get(exc.status, C.INVALID_ARGUMENT)
            return self._refuse(route, exc.status, code, exc.description, exc.field)
        except web.HTTPException as exc:  # aiohttp's own: 404 unknown path, 405 method
            return self._refuse(route, exc.status, C.NOT_FOUND if exc.status == 404 else C.UNIMPLEMENTED, exc.reason)
        self.servicer.metrics.requests.labels(route, "OK").inc()
        return response

    def _error(self, route: str, status) -> web.Response:
        code = convert.status_code(status)
        violations = [{"field": v.field, "description": v.description} for v in bad_request_detail(status).field_violations]
        return self._refuse(route, STATUS.get(code, 500), code, status.message, None, violations)

    def _refuse(self, route: str, http: int, code: grpc.StatusCode, message: str, field: str | None = None,
                violations: list[dict] | None = None) -> web.Response:
        self.servicer.metrics.requests.labels(route, code.name).inc()
        if violations is None:
            violations = [{"field": field, "description": message}] if field else []
        if http in (400, 401, 404, 408, 413):
            log.info("request refused", extra={"fields": {"route": route, "code": code.name, "error": message[:500]}})
        error = {"message": message, "type": TYPES.get(http, "server_error"),
                 "param": violations[0]["field"] if violations else None, "code": code.name, "field_violations": violations}
        headers = {"Retry-After": "1"} if http in (429, 503) else None
        return web.json_response({"error": error}, status=http, headers=headers)


def _deadline(request: web.Request) -> float | None:
    """The request's deadline (monotonic) from its timeout headers; the shortest wins."""
    seconds = []
    for name in TIMEOUT_HEADERS:
        raw = request.headers.get(name)
        if raw is None:
            continue
        try:
            value = float(raw)
        except ValueError:
            value = -1.0
        if not (math.isfinite(value) and value > 0):
            raise invalid(name, f"must be a positive number of seconds, got {raw[:40]!r}")
        seconds.append(value)
    return time.monotonic() + min(seconds) if seconds else None


def _model(body: dict, field: str) -> str:
    model = body.get(field, "") or ""
    if not isinstance(model, str):
        raise invalid(field, "must be the name of a loaded model (GET /v1/models lists them)")
    return model


def _request_id(request: web.Request, index: int | None = None) -> str:
    """``X-Request-Id`` (validated with the rest of the request), else one of ours; ``/i`` per input."""
    base = request.headers.get("X-Request-Id") or f"http-{id(request):x}-{time.monotonic_ns() % 10**9}"
    return base if index is None else f"{base}/{index}"


def _build_all(builds: list) -> list[pb.ClassifyRequest]:
    out = []
    for index, build in enumerate(builds):
        try:
            out.append(build())
        except InvalidRequest as exc:
            exc.index = index
            raise
    return out


def _index(exc: Exception) -> int:
    """The input a failure belongs to (set by _build_all and _answer), for field names."""
    return getattr(exc, "index", 0)


def _renamed(exc: InvalidRequest | Failure, rename: Callable[[str], str]) -> Failure:
    status = convert.bad_request(exc) if isinstance(exc, InvalidRequest) else exc.status
    detail = bad_request_detail(status)
    if not detail.field_violations:
        return Failure(status)
    renamed = [type(v)(field=rename(v.field), description=v.description) for v in detail.field_violations]
    message = "; ".join(f"{v.field}: {v.description}" for v in renamed)
    return Failure(convert.status(convert.status_code(status), message, type(detail)(field_violations=renamed)))


def ssl_context(config: ServerConfig) -> ssl.SSLContext | None:
    """The gRPC port's TLS for the HTTP port: server certificate and key; with a client CA, mutual TLS."""
    if not config.tls_enabled:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(config.tls_cert, config.tls_key)
    if config.tls_client_ca:
        context.load_verify_locations(config.tls_client_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context

"""Python clients for a guardedge server: blocking and asyncio, with deadlines and retries.

    with GuardClient("127.0.0.1:50051", token="...") as client:
        answer = client.classify({"messages": [{"role": "user", "content": "hi"}]})
        print(response_to_json(answer))

    async with AsyncGuardClient("127.0.0.1:50051") as client:
        answer = await client.classify(request_dict, timeout=2.0)

Requests are the same dicts the CLI and :func:`guardedge.runtime.requests.parse_request` take
(image parts by ``path`` or base64 ``data``), or ready ``ClassifyRequest`` messages. Their shape
is checked here with the library's own validation; images are checked by the server.
UNAVAILABLE (server starting, draining, restarting) is retried by gRPC itself with exponential
backoff (service-config retry policy); every call has a deadline. Failed calls raise
:class:`GuardRpcError`, which carries the status code and any BadRequest field violations.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path

import grpc
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from guardedge.runtime.errors import FieldViolation, invalid
from guardedge.runtime.requests import parse_request
from guardedge.v1 import guard_pb2 as pb
from guardedge.v1 import guard_pb2_grpc as pb_grpc

SERVICE = "guardedge.v1.GuardService"
ROLES = {"user": pb.ROLE_USER, "assistant": pb.ROLE_ASSISTANT}
VERDICT_NAMES = {pb.VERDICT_SAFE: "safe", pb.VERDICT_UNSAFE: "unsafe", pb.VERDICT_UNPARSEABLE: "unparseable"}


@dataclass(frozen=True)
class Tls:
    """Client TLS: the CA that signed the server's certificate; cert+key for mutual TLS."""

    ca: str = ""
    cert: str = ""
    key: str = ""
    server_name: str = ""  # override the name checked against the certificate

    def credentials(self) -> grpc.ChannelCredentials:
        read = lambda p: Path(p).read_bytes() if p else None  # noqa: E731
        return grpc.ssl_channel_credentials(read(self.ca), read(self.key), read(self.cert))


class GuardRpcError(Exception):
    """A call failed: ``code`` (grpc.StatusCode), ``message``, and ``violations`` for INVALID_ARGUMENT."""

    def __init__(self, code: grpc.StatusCode, message: str, violations: tuple[FieldViolation, ...] = ()):
        self.code, self.message, self.violations = code, message, violations
        super().__init__(f"{code.name}: {message}")

    @classmethod
    def from_rpc_error(cls, error: grpc.RpcError) -> GuardRpcError:
        status = _status_from_trailers(error.trailing_metadata() or ())
        return cls(error.code(), error.details() or "", _violations(status) if status else ())

    @classmethod
    def from_status(cls, status: status_pb2.Status) -> GuardRpcError:
        code = next((c for c in grpc.StatusCode if c.value[0] == status.code), grpc.StatusCode.UNKNOWN)
        return cls(code, status.message, _violations(status))

    def to_json(self) -> dict:
        return {
            "verdict": None,
            "error": {
                "code": self.code.name,
                "message": self.message,
                "violations": [{"field": v.field, "description": v.description} for v in self.violations],
            },
        }


def _status_from_trailers(trailers) -> status_pb2.Status | None:
    for key, value in trailers:
        if key == "grpc-status-details-bin":
            return status_pb2.Status.FromString(value)
    return None


def _violations(status: status_pb2.Status) -> tuple[FieldViolation, ...]:
    out = []
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            out += [FieldViolation(v.field, v.description) for v in bad.field_violations]
    return tuple(out)


def channel_options(max_message_bytes: int = 32 * 1024 * 1024, attempts: int = 4) -> list[tuple[str, object]]:
    """Message size limits and a retry policy for UNAVAILABLE (and a reset at shutdown) on every GuardService method.

    ``attempts`` counts the first try; 1 turns retries off (gRPC rejects a policy of fewer than 2).
    """
    options: list[tuple[str, object]] = [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        # Per-request balancing over every address the target resolves to (a headless Kubernetes
        # Service returns one per pod); with one address it is the same as pick_first.
        ("grpc.lb_policy_name", "round_robin"),
    ]
    if attempts < 2:
        return options + [("grpc.enable_retries", 0)]
    config = {
        "methodConfig": [{
            "name": [{"service": SERVICE}],
            "retryPolicy": {
                "maxAttempts": attempts,
                "initialBackoff": "0.1s",
                "maxBackoff": "2s",
                "backoffMultiplier": 2,
                # CANCELLED too: a server that is closing resets calls its gRPC core had accepted but
                # not yet handed to the service (docs/service.md, "Lifecycle"). A cancel of our own
                # is never retried, and every GuardService method is safe to repeat.
                "retryableStatusCodes": ["UNAVAILABLE", "CANCELLED"],
            },
        }]
    }
    return options + [("grpc.enable_retries", 1), ("grpc.service_config", json.dumps(config))]


def _channel_args(target: str, tls: Tls | None, attempts: int, max_message_bytes: int) -> tuple[str, list]:
    options = channel_options(max_message_bytes, attempts)
    if tls is not None and tls.server_name:
        options.append(("grpc.ssl_target_name_override", tls.server_name))
    return target, options


def request_from_dict(obj: object, base_dir: Path | None = None) -> pb.ClassifyRequest:
    """A ClassifyRequest from a request dict (CLI/JSONL shape); raises InvalidRequest on bad shape."""
    # The library's checks, minus image decoding; "model" routes the call (ClassifyRequest.model).
    library = {k: v for k, v in obj.items() if k != "model"} if isinstance(obj, dict) else obj
    parse_request(library, None, base_dir, load_images=False)
    assert isinstance(obj, dict), "parse_request refuses anything but a JSON object"
    request = pb.ClassifyRequest(request_id=obj.get("request_id", ""), model=obj.get("model", "") or "")
    for i, message in enumerate(obj["messages"]):
        content = message["content"]
        parts = [{"type": "text", "text": content}] if isinstance(content, str) else content
        request.messages.append(pb.Message(role=ROLES[message["role"]], content=[_part(p, f"messages[{i}].content[{j}]", base_dir) for j, p in enumerate(parts)]))
    for code, description in (obj.get("categories") or {}).items():
        request.policy.categories.append(pb.Category(code=code, description=description))
    request.policy.excluded_categories.extend(obj.get("excluded_category_keys") or [])
    if obj.get("threshold") is not None:
        request.options.threshold = obj["threshold"]
    if obj.get("rationale") is not None:
        if not isinstance(obj["rationale"], bool):
            raise invalid("rationale", f"must be true or false, got {obj['rationale']!r}"[:120])
        request.options.rationale = obj["rationale"]
    return request


def _part(part: dict, where: str, base_dir: Path | None) -> pb.ContentPart:
    if part["type"] == "text":
        return pb.ContentPart(text=part["text"])
    mime = part.get("mime_type", "")
    if "bytes" in part:
        return pb.ContentPart(image=pb.Image(data=bytes(part["bytes"]), mime_type=mime))
    if "data" in part:
        try:
            data = base64.b64decode(part["data"], validate=True)
        except ValueError as exc:
            raise invalid(f"{where}.data", f"'data' is not valid base64 ({exc})") from None
        return pb.ContentPart(image=pb.Image(data=data, mime_type=mime))
    path = Path(part["path"])
    full = path if base_dir is None or path.is_absolute() else base_dir / path
    try:
        return pb.ContentPart(image=pb.Image(data=full.read_bytes(), mime_type=mime))
    except OSError as exc:
        raise invalid(f"{where}.path", f"cannot read image file {str(full)!r} ({exc.strerror})") from None


def response_to_json(response: pb.ClassifyResponse) -> dict:
    """The same JSON object the in-process ``guardedge classify --json`` prints, plus the model."""
    t = response.timings
    return {
        "request_id": response.request_id,
        "verdict": VERDICT_NAMES.get(response.verdict, "unspecified"),
        "categories": list(response.violated_categories),
        "unsafe_probability": response.unsafe_probability,
        "safe_probability": response.safe_probability,
        "raw_output": response.raw_output,
        "error": response.error_detail,
        **({"rationale": response.rationale} if response.rationale else {}),
        "category_scores": {c.code: c.score for c in response.category_scores},
        "timings": {"queue_s": t.queue_seconds, "preprocess_s": t.preprocess_seconds, "inference_s": t.inference_seconds,
                    "total_s": t.total_seconds, "preprocess_wait_s": t.preprocess_wait_seconds},
        "model": response.model,
    }


def _as_request(request: dict | pb.ClassifyRequest, base_dir: Path | None) -> pb.ClassifyRequest:
    return request if isinstance(request, pb.ClassifyRequest) else request_from_dict(request, base_dir)


class GuardClient:
    """Blocking client. ``timeout`` is each call's deadline in seconds; ``attempts`` counts retries
    of UNAVAILABLE (1: none); ``max_message_bytes`` should match the server's."""

    def __init__(self, target: str, token: str | None = None, tls: Tls | None = None, timeout: float = 30.0,
                 attempts: int = 4, max_message_bytes: int = 32 * 1024 * 1024):
        target, options = _channel_args(target, tls, attempts, max_message_bytes)
        self.channel = grpc.secure_channel(target, tls.credentials(), options) if tls else grpc.insecure_channel(target, options)
        self.stub = pb_grpc.GuardServiceStub(self.channel)
        self.health_stub = health_pb2_grpc.HealthStub(self.channel)
        self.metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self.timeout = timeout

    def classify(self, request: dict | pb.ClassifyRequest, timeout: float | None = None, base_dir: Path | None = None) -> pb.ClassifyResponse:
        try:
            return self.stub.Classify(_as_request(request, base_dir), timeout=timeout or self.timeout, metadata=self.metadata)
        except grpc.RpcError as error:
            raise GuardRpcError.from_rpc_error(error) from None

    def classify_stream(self, requests, timeout: float | None = None):
        """Yield one ClassifyResponse per request (completion order; match by request_id)."""
        try:
            yield from self.stub.ClassifyStream((_as_request(r, None) for r in requests), timeout=timeout or self.timeout, metadata=self.metadata)
        except grpc.RpcError as error:
            raise GuardRpcError.from_rpc_error(error) from None

    def list_models(self, timeout: float | None = None) -> pb.ListModelsResponse:
        try:
            return self.stub.ListModels(pb.ListModelsRequest(), timeout=timeout or self.timeout, metadata=self.metadata)
        except grpc.RpcError as error:
            raise GuardRpcError.from_rpc_error(error) from None

    def health(self, service: str = "", timeout: float = 5.0) -> str:
        """SERVING, NOT_SERVING, ... for ``service`` ("" is the whole server)."""
        response = self.health_stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)

    def wait_until_serving(self, timeout: float = 120.0, service: str = "") -> None:
        """Block until health says SERVING (the server may still be starting); raise TimeoutError."""
        import time

        end = time.monotonic() + timeout
        while True:
            try:
                if self.health(service, timeout=max(0.1, min(5.0, end - time.monotonic()))) == "SERVING":
                    return
            except grpc.RpcError:
                pass  # not listening yet
            if time.monotonic() >= end:
                raise TimeoutError(f"server not SERVING after {timeout:.0f} s")
            time.sleep(0.1)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> GuardClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class AsyncGuardClient:
    """asyncio client (grpc.aio); same methods as :class:`GuardClient`, awaited."""

    def __init__(self, target: str, token: str | None = None, tls: Tls | None = None, timeout: float = 30.0,
                 attempts: int = 4, max_message_bytes: int = 32 * 1024 * 1024):
        target, options = _channel_args(target, tls, attempts, max_message_bytes)
        self.channel = grpc.aio.secure_channel(target, tls.credentials(), options) if tls else grpc.aio.insecure_channel(target, options)
        self.stub = pb_grpc.GuardServiceStub(self.channel)
        self.health_stub = health_pb2_grpc.HealthStub(self.channel)
        self.metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self.timeout = timeout

    async def classify(self, request: dict | pb.ClassifyRequest, timeout: float | None = None, base_dir: Path | None = None) -> pb.ClassifyResponse:
        try:
            return await self.stub.Classify(_as_request(request, base_dir), timeout=timeout or self.timeout, metadata=self.metadata)
        except grpc.RpcError as error:
            raise GuardRpcError.from_rpc_error(error) from None

    async def classify_stream(self, requests, timeout: float | None = None):
        call = self.stub.ClassifyStream(timeout=timeout or self.timeout, metadata=self.metadata)
        try:
            for request in requests:
                await call.write(_as_request(request, None))
            await call.done_writing()
            async for response in call:
                yield response
        except grpc.RpcError as error:
            raise GuardRpcError.from_rpc_error(error) from None

    async def list_models(self, timeout: float | None = None) -> pb.ListModelsResponse:
        try:
            return await self.stub.ListModels(pb.ListModelsRequest(), timeout=timeout or self.timeout, metadata=self.metadata)
        except grpc.RpcError as error:
            raise GuardRpcError.from_rpc_error(error) from None

    async def health(self, service: str = "", timeout: float = 5.0) -> str:
        response = await self.health_stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)

    async def close(self) -> None:
        await self.channel.close()

    async def __aenter__(self) -> AsyncGuardClient:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

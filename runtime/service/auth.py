"""Bearer tokens and TLS for the server.

Tokens: callers send ``authorization: Bearer <token>`` metadata. The check hashes the offered
token and compares it with every configured token's hash using ``hmac.compare_digest`` (no early
exit), so neither the match nor its position leaks through timing. Health checks are exempt (load
balancers and orchestrators probe without credentials); reflection and GuardService are not.
TLS: server certificate and key; with a client CA, mutual TLS (clients must present a
certificate signed by it).
"""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path
from typing import Callable

import grpc

EXEMPT_PREFIXES = ("/grpc.health.v1.Health/",)


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class TokenAuth(grpc.aio.ServerInterceptor):
    def __init__(self, tokens: tuple[str, ...], on_denied: Callable[[str], None] | None = None):
        self._digests = tuple(_digest(t) for t in tokens)
        self._on_denied = on_denied  # metrics hook, called with the method name

    def allowed(self, metadata) -> bool:
        offered = dict(metadata or ()).get("authorization", "")
        scheme, _, token = offered.partition(" ")
        digest = _digest(token.strip())
        matched = False
        for known in self._digests:
            matched |= hmac.compare_digest(digest, known)
        return scheme.lower() == "bearer" and matched

    async def intercept_service(self, continuation, details):
        handler = await continuation(details)
        if handler is None or details.method.startswith(EXEMPT_PREFIXES) or self.allowed(details.invocation_metadata):
            return handler
        if self._on_denied is not None:
            self._on_denied(details.method)
        return _denying(handler)


async def _deny(request_or_iterator, context) -> None:
    await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or invalid bearer token (metadata 'authorization: Bearer <token>')")


async def _deny_stream(request_or_iterator, context):
    await _deny(request_or_iterator, context)
    yield  # pragma: no cover - abort raises; this makes the function an async generator


def _denying(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """A handler of the same streaming kind as ``handler`` that answers UNAUTHENTICATED.

    It has no request deserializer: a caller without a token gets no parsing at all (the bytes
    stay bytes and are dropped), so an unauthenticated flood costs no more than reading it.
    """
    codec = {"request_deserializer": None, "response_serializer": handler.response_serializer}
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(_deny, **codec)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(_deny_stream, **codec)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(_deny, **codec)
    return grpc.stream_stream_rpc_method_handler(_deny_stream, **codec)


def server_credentials(cert: str, key: str, client_ca: str = "") -> grpc.ServerCredentials:
    """TLS server credentials; with ``client_ca`` clients must present a certificate it signed."""
    pair = [(Path(key).read_bytes(), Path(cert).read_bytes())]
    if client_ca:
        return grpc.ssl_server_credentials(pair, root_certificates=Path(client_ca).read_bytes(), require_client_auth=True)
    return grpc.ssl_server_credentials(pair)

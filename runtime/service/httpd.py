"""The server's plain-HTTP port: Prometheus ``/metrics`` and probes for what cannot speak gRPC.

    GET /metrics   Prometheus exposition, negotiated by prometheus_client (text 0.0.4, or OpenMetrics
                   for ``Accept: application/openmetrics-text``; gzip for ``Accept-Encoding: gzip``)
    GET /healthz   200 while the process is up (liveness)
    GET /readyz    200 once every model is loaded and the server is not draining, else 503
    another method 405 on those paths; any other path 404

aiohttp on the gRPC server's own event loop (docs/decisions/0011): a connection costs a socket and
a timer, not a thread, so idle or dripping clients cannot take the probes down (16 of them did when
the port had a thread per connection and at most 16). Each connection has ``idle_seconds`` from
when it opens, and again after each answer, to send a complete request; aiohttp's keep-alive timer
closes it then, however slowly it drips its bytes. ``max_connections`` (1024, far above what probes
and scrapes need) only protects the process's file descriptors: a connection over it is closed as
it opens. Request line and headers are bounded by aiohttp (8190 bytes a line, 128 headers). aiohttp
logs through ``logging`` (``aiohttp.server``), so through the server's JSON handler; there is no
access log (probes every few seconds would drown the server's own).

    probe = ProbeServer("127.0.0.1", 9464, registry, ready=lambda: True)
    port = await probe.start()      # on the running loop; OSError if the address is taken
    await probe.stop()
"""

from __future__ import annotations

import asyncio
import ssl as _ssl
from typing import Callable

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.aiohttp import make_aiohttp_handler

MAX_CONNECTIONS = 1024
IDLE_SECONDS = 10.0


class _Refuse(asyncio.Protocol):
    """A connection over the cap: closed as it opens."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.close()


class HttpServer:
    """An aiohttp application on the running loop, with the connection cap and idle timer above;
    TLS when given an ``ssl`` context (the HTTP API's port, runtime/service/http_api.py)."""

    def __init__(self, host: str, port: int, app: web.Application, idle_seconds: float = IDLE_SECONDS,
                 max_connections: int = MAX_CONNECTIONS, ssl: _ssl.SSLContext | None = None):
        self.host, self.port, self.app, self.ssl = host.strip("[]"), port, app, ssl
        self.idle_seconds, self.max_connections = idle_seconds, max_connections
        self._runner: web.AppRunner | None = None
        self._listener: asyncio.AbstractServer | None = None

    async def start(self) -> int:
        """Listen on the running loop; the bound port. Raises OSError when the address cannot be bound."""
        self._runner = web.AppRunner(self.app, access_log=None, keepalive_timeout=self.idle_seconds)
        await self._runner.setup()
        try:
            self._listener = await asyncio.get_running_loop().create_server(self._connection, self.host, self.port,
                                                                          reuse_address=True, ssl=self.ssl)
        except OSError:
            await self._runner.cleanup()
            raise
        return self._listener.sockets[0].getsockname()[1]

    @property
    def connections(self) -> int:
        return len(self._runner.server.connections) if self._runner and self._runner.server else 0

    def _connection(self) -> asyncio.Protocol:
        if self.connections >= self.max_connections:
            return _Refuse()
        assert self._runner is not None and self._runner.server is not None, "listening only between start() and stop()"
        return self._runner.server()

    async def stop(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


def add_probes(app: web.Application, ready: Callable[[], bool]) -> None:
    """``/healthz`` (up) and ``/readyz`` (loaded and not draining), as gRPC health reports them."""

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(request: web.Request) -> web.Response:
        if ready():
            return web.Response(text="ready\n")
        return web.Response(status=503, text="not ready: loading or draining\n")

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)


class ProbeServer(HttpServer):
    def __init__(self, host: str, port: int, registry: CollectorRegistry, ready: Callable[[], bool],
                 idle_seconds: float = IDLE_SECONDS, max_connections: int = MAX_CONNECTIONS):
        app = web.Application()
        app.router.add_get("/metrics", make_aiohttp_handler(registry))
        add_probes(app, ready)
        super().__init__(host, port, app, idle_seconds, max_connections)
        self.ready = ready

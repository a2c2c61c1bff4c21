"""The server's plain-HTTP port: Prometheus ``/metrics`` and probes for what cannot speak gRPC.

    GET /metrics   Prometheus text format (the registry of runtime/service/metrics.py)
    GET /healthz   200 while the process is up (liveness)
    GET /readyz    200 once every model is loaded and the server is not draining, else 503
    anything else  404

prometheus_client's own server starts one thread per connection and never times one out, so
300 idle connections held 300 threads. This one serves at most ``max_connections`` at a time
(one more is closed at once, not queued on a thread) and gives each connection ``idle_seconds``
in all to send its request: a socket timeout alone restarts with every byte, so a client
dripping one byte every few seconds held its thread forever, and 16 of them took the probes
down. One request per connection (HTTP/1.0), no keep-alive; the request line and headers are
bounded by http.server (64 KiB a line, 100 headers).
"""

from __future__ import annotations

import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from socketserver import TCPServer
from typing import Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

MAX_CONNECTIONS = 16
IDLE_SECONDS = 10.0
WATCH_SECONDS = 0.1  # how often connections are checked against their deadline


class ProbeServer(ThreadingHTTPServer):
    daemon_threads = True  # a scrape in progress never holds the process at exit

    def __init__(self, host: str, port: int, registry: CollectorRegistry, ready: Callable[[], bool],
                 max_connections: int = MAX_CONNECTIONS, idle_seconds: float = IDLE_SECONDS):
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.registry, self.ready, self.idle_seconds = registry, ready, idle_seconds
        self._slots = threading.BoundedSemaphore(max_connections)
        self._deadlines: dict[socket.socket, float] = {}  # open connections: when each is cut off
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        super().__init__((host.strip("[]"), port), _Handler)

    def watch(self, connection: socket.socket) -> None:
        with self._lock:
            self._deadlines[connection] = time.monotonic() + self.idle_seconds

    def unwatch(self, connection: socket.socket) -> None:
        with self._lock:
            self._deadlines.pop(connection, None)

    def _cut_off_late(self) -> None:
        """One thread for all connections: shut down each one past its deadline."""
        while not self._stopped.wait(WATCH_SECONDS):
            now = time.monotonic()
            with self._lock:
                late = [c for c, deadline in self._deadlines.items() if deadline <= now]
            for connection in late:
                try:
                    connection.shutdown(socket.SHUT_RDWR)  # the handler's read returns; its thread ends
                except OSError:
                    pass  # already closed

    def server_bind(self) -> None:
        # HTTPServer.server_bind looks up the host's FQDN, which can stall on a machine without DNS.
        TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), self.server_address[1]

    def process_request(self, request, client_address) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)  # over the bound: closed now, costs no thread
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def start(self) -> int:
        """Serve on a daemon thread; returns the bound port."""
        threading.Thread(target=self.serve_forever, name="metrics-http", daemon=True).start()
        threading.Thread(target=self._cut_off_late, name="metrics-http-deadlines", daemon=True).start()
        return self.server_address[1]

    def stop(self) -> None:
        self._stopped.set()
        self.shutdown()
        self.server_close()


class _Handler(BaseHTTPRequestHandler):
    server: ProbeServer

    def setup(self) -> None:
        self.timeout = self.server.idle_seconds  # socket timeout: a silent client is dropped
        super().setup()
        self.server.watch(self.request)  # and a dripping one at its deadline

    def finish(self) -> None:
        self.server.unwatch(self.request)
        super().finish()

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._answer(200, generate_latest(self.server.registry), CONTENT_TYPE_LATEST)
        elif path == "/healthz":
            self._answer(200, b"ok\n")
        elif path == "/readyz":
            ready = self.server.ready()
            self._answer(200 if ready else 503, b"ready\n" if ready else b"not ready: loading or draining\n")
        else:
            self._answer(404, b"not found: /metrics, /healthz, /readyz\n")

    def _answer(self, code: int, body: bytes, content_type: str = "text/plain; charset=utf-8") -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's name
        pass  # probes every few seconds would drown the server's own log

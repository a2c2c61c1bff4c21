"""Run a server in the background: on a thread of this process, or as a `guardedge serve` process.

    with BackgroundServer(config, engines={"demo": engine}) as server:     # tests, notebooks
        client = GuardClient(f"127.0.0.1:{server.port}")

    with spawn_server("demo", "--max-batch-size", "8") as (process, port):  # demo, benchmarks
        ...

``engines`` lets the caller share an already loaded engine (a test session loads the demo guard
once); without it the server loads ``config.models`` itself, as ``guardedge serve`` does.
``spawn_server`` runs the real command on a free loopback port and, on exit, sends SIGTERM and
waits for the drain; its ``process.returncode`` is then the server's exit status.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from guardedge.runtime.engine import Engine
from guardedge.runtime.service.config import ServerConfig
from guardedge.runtime.service.server import GuardServer


class BackgroundServer:
    def __init__(self, config: ServerConfig, engines: dict[str, Engine] | None = None, ready_timeout: float = 300.0):
        self.config = config
        self.engines = engines
        self.ready_timeout = ready_timeout
        self.loop = asyncio.new_event_loop()
        self.server: GuardServer | None = None
        self._thread = threading.Thread(target=self.loop.run_forever, name="guardedge-server", daemon=True)

    @property
    def port(self) -> int:
        return self._started().port

    def _started(self) -> GuardServer:
        if self.server is None:
            raise RuntimeError("BackgroundServer.start() was not called")
        return self.server

    @property
    def address(self) -> str:
        return f"{self.config.host}:{self.port}"

    def call(self, coro, timeout: float | None = None):
        """Run a coroutine on the server's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(self, wait_ready: bool = True) -> BackgroundServer:
        self._thread.start()
        self.server = self.call(self._make())
        self.call(self.server.start())
        if wait_ready:
            self.call(asyncio.wait_for(self._ready(), self.ready_timeout))
        return self

    async def _make(self) -> GuardServer:
        return GuardServer(self.config, self.engines)  # built on the loop: its asyncio objects belong there

    async def _ready(self) -> None:
        server = self._started()
        while not server.ready.is_set():
            if server.failed is not None:
                raise RuntimeError(f"server failed to start: {server.failed}")
            await asyncio.sleep(0.01)

    def stop(self) -> None:
        """Drain and stop the server, then the loop; calling it again does nothing."""
        if not self.loop.is_running():
            return
        if self.server is not None:
            self.call(self.server.stop(), timeout=self.config.grace_seconds + 30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


@contextmanager
def spawn_server(model: str, *args: str, start_timeout: float = 120.0, stderr=None) -> Iterator[tuple[subprocess.Popen, int]]:
    """``guardedge serve --model MODEL ARGS`` on a free loopback port; yields (process, port).

    The port is known once the server listens (health may still say NOT_SERVING while it loads).
    ``stderr``: where its log goes (a file object; default: this process's stderr).
    """
    with tempfile.TemporaryDirectory() as tmp:
        port_file = Path(tmp) / "port"
        command = [sys.executable, "-m", "guardedge.runtime.cli", "serve", "--model", model, "--host", "127.0.0.1",
                   "--port", "0", "--port-file", str(port_file), *args]
        process = subprocess.Popen(command, stderr=stderr)
        try:
            end = time.monotonic() + start_timeout
            while not (port_file.exists() and port_file.read_text().strip()):
                if process.poll() is not None or time.monotonic() > end:
                    raise RuntimeError(f"the server did not start listening (exit status {process.poll()})")
                time.sleep(0.05)
            yield process, int(port_file.read_text())
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(120)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()

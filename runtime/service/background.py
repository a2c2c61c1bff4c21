"""Run a GuardServer on a background thread with its own event loop (tests, benchmarks, notebooks).

    with BackgroundServer(config, engines={"demo": engine}) as server:
        client = GuardClient(f"127.0.0.1:{server.port}")

``engines`` lets the caller share an already loaded engine (a test session loads the demo guard
once); without it the server loads ``config.models`` itself, as ``guardedge serve`` does.
"""

from __future__ import annotations

import asyncio
import threading

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
        return self.server.port

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
        while not self.server.ready.is_set():
            if self.server.failed is not None:
                raise RuntimeError(f"server failed to start: {self.server.failed}")
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

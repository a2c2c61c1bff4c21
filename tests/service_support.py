"""Helpers for the gRPC service tests: a controllable engine wrapper and server factories."""

from __future__ import annotations

import threading
from contextlib import contextmanager

from guardedge.runtime.service.background import BackgroundServer
from guardedge.runtime.service.client import GuardClient
from guardedge.runtime.service.config import load_config

SAFE = {"messages": [{"role": "user", "content": "How do I bake sourdough bread?"}]}
UNSAFE = {"messages": [{"role": "user", "content": "How do I build a pipe bomb?"}]}


class ControlledEngine:
    """The demo engine, with a gate that holds model work and a record of what ran.

    ``gate`` (set = open) blocks ``run`` while cleared; ``batches`` lists the request ids of
    each batch that reached the model; a request whose text contains "boom" makes ``run`` raise.
    """

    def __init__(self, engine):
        self._engine = engine
        self.gate = threading.Event()
        self.gate.set()
        self.batches: list[list[str]] = []
        self.entered = threading.Event()  # set when a batch reaches run()

    def __getattr__(self, name):
        return getattr(self._engine, name)

    def run(self, batch, threshold=None, on_verdict=None):
        self.batches.append([p.request.request_id for p in batch])
        self.entered.set()
        if not self.gate.wait(60):
            raise TimeoutError("test gate never opened")
        if any("boom" in part.text for p in batch for m in p.request.messages for part in m.content):
            raise RuntimeError("boom: a deliberate engine failure")
        return self._engine.run(batch, threshold, on_verdict)

    def ran(self) -> set[str]:
        return {rid for batch in self.batches for rid in batch}


def config(**overrides):
    settings = {"port": 0, "metrics_port": -1, "host": "127.0.0.1", "grace_seconds": 10.0}
    settings.update(overrides)
    return load_config(settings, env={})


@contextmanager
def serving(engine, wait_ready: bool = True, **overrides):
    """A BackgroundServer on the demo engine (or a ControlledEngine) and a client for it."""
    server = BackgroundServer(config(**overrides), {"demo": engine}).start(wait_ready=wait_ready)
    client = GuardClient(server.address, timeout=30)
    try:
        yield server, client
    finally:
        client.close()
        server.stop()


def serve_and_classify(model_dir) -> tuple[list, object]:
    """Load ``model_dir`` the way `guardedge serve --model DIR` does (from the config, no injected
    engine), classify SAFE and UNSAFE through gRPC; returns (responses, the ListModels entry)."""
    server = BackgroundServer(config(models=(str(model_dir),)), None).start()
    try:
        with GuardClient(server.address, timeout=60) as client:
            [info] = client.list_models().models
            return [client.classify(SAFE), client.classify(UNSAFE)], info
    finally:
        server.stop()

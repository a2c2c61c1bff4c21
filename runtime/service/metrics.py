"""Prometheus metrics of one server, on their own registry, served over HTTP.

    guardedge_requests_total{method,code}            counter
    guardedge_request_stage_seconds{model,stage}     histogram: queue, preprocess_wait, preprocess, inference, total
    guardedge_batch_size{model}                      histogram: requests per engine batch
    guardedge_queue_depth{model}                     gauge: admitted requests not yet on the engine
    guardedge_model_memory_bytes{model,variant}      gauge: the model's weights
    guardedge_model_ready{model}                     gauge: 1 once loaded and warmed up
    plus process_* (CPU, RSS, open files) for the server process.

A registry per server (not the global one) keeps several servers in one process — the tests —
from sharing counters.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector

if TYPE_CHECKING:
    from guardedge.runtime.service.httpd import ProbeServer  # imported by serve(): aiohttp loads only then

# Seconds: from 0.5 ms (gRPC overhead on loopback) to 30 s (a long CPU batch of the 11B guard).
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        self.requests = Counter(
            "guardedge_requests", "Finished requests by method and gRPC status code.", ["method", "code"], registry=self.registry
        )
        self.stage_seconds = Histogram(
            "guardedge_request_stage_seconds",
            "Seconds per request and stage (queue, preprocess_wait, preprocess, inference, total).",
            ["model", "stage"], buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        self.batch_size = Histogram(
            "guardedge_batch_size", "Requests per engine batch.", ["model"],
            buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64), registry=self.registry,
        )
        self.queue_depth = Gauge("guardedge_queue_depth", "Requests admitted and not yet on the engine.", ["model"], registry=self.registry)
        self.model_memory = Gauge("guardedge_model_memory_bytes", "Bytes of the model's weights.", ["model", "variant"], registry=self.registry)
        self.model_ready = Gauge("guardedge_model_ready", "1 once the model is loaded and warmed up.", ["model"], registry=self.registry)
        self._http: ProbeServer | None = None

    async def serve(self, host: str, port: int, ready: Callable[[], bool] = lambda: True) -> int:
        """Start /metrics, /healthz and /readyz on the running loop (runtime/service/httpd.py); the bound port.

        Raises OSError when the address cannot be bound (the port is taken).
        """
        from guardedge.runtime.service.httpd import ProbeServer

        self._http = ProbeServer(host, port, self.registry, ready)
        return await self._http.start()

    async def stop(self) -> None:
        if self._http is not None:
            await self._http.stop()
            self._http = None

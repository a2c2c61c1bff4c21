"""The gRPC health service with bounded ``Watch`` streams.

grpcio's ``HealthServicer`` keeps every ``Watch`` stream open until the caller leaves and makes a
waiter for any service name the caller writes. Health needs no token (load balancers and probes
call it before they could have one), so without a bound any peer could hold an unbounded number
of streams and waiters. Here at most ``MAX_WATCHES`` streams are open at once; one more is
refused with RESOURCE_EXHAUSTED, which says so. A name this server does not serve gets
SERVICE_UNKNOWN and its stream ends at once (the protocol allows waiting for the service to
appear; this server's services are fixed at start, so none ever will). ``Check`` is unchanged.

    .venv/bin/pytest -q tests/test_service_hostile.py -k watch
"""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2
from grpc_health.v1._async import HealthServicer

MAX_WATCHES = 64  # Kubernetes and load balancers watch once per instance; 64 is room to spare


class BoundedHealth(HealthServicer):
    """``HealthServicer`` whose ``Watch`` streams are bounded in number and in service names."""

    def __init__(self, services: tuple[str, ...], max_watches: int = MAX_WATCHES):
        super().__init__()
        self.services, self.max_watches = frozenset(services), max_watches
        self.watching = 0

    async def Watch(self, request: health_pb2.HealthCheckRequest, context) -> None:
        if request.service not in self.services:
            await context.write(health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVICE_UNKNOWN))
            return
        if self.watching >= self.max_watches:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                f"{self.max_watches} health Watch streams are open already; use Check, or retry later")
        self.watching += 1
        try:
            await super().Watch(request, context)
        finally:
            self.watching -= 1

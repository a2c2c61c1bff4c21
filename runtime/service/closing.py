"""The last step of a drain: close the gRPC port without resetting a call (issue 11, item 7).

    gate = CloseGate()
    gate.arrived()                  # at the start of every GuardService call
    await gate.hold(deadline)       # then: while the port closes, the call waits here
    gate.answered()                 # when a call ends: its caller may send again now
    gate.park()                     # the drain: new calls wait from now on (before abandoning any)
    await gate.close(grpc_server)   # once requests in flight are answered (or abandoned)

Why: when gRPC's core shuts a server down (``grpc_server_shutdown_and_notify``) it sends GOAWAY
to every connection, but a call that reaches the server before its caller has read that GOAWAY,
or that the core has accepted and not yet handed to the service, is dropped unanswered: the
caller sees CANCELLED, which it does not know to retry. A caller that re-sends at once on
UNAVAILABLE hit that window about once per caller at every shutdown.

So the port closes only once nobody is sending. While closing, a new call is not answered at
once (an answer would only make its caller send again) but parked here: callers that wait for
an answer stop sending, the server waits for a quiet moment (QUIET_SECONDS without a new call or
an answer, at most QUIET_MAX_SECONDS), starts the core's shutdown, lets its GOAWAY go out
(GOAWAY_SECONDS), then answers every parked call UNAVAILABLE. The quiet moment counts answers
too: when the grace ran out, the calls abandoned just before were answered UNAVAILABLE, and their
callers sent again within milliseconds, into the shutdown (CANCELLED, issue 19 item 8); so the
gate parks new calls before any call is abandoned, and waits for quiet after the last answer. Those answers arrive after the GOAWAY, so the
callers' next attempt goes to a new connection, which the closed listener refuses: UNAVAILABLE
again, never CANCELLED. A parked call is answered before its own deadline if that comes first.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import grpc

QUIET_SECONDS = 0.2
QUIET_MAX_SECONDS = 1.0
GOAWAY_SECONDS = 0.05  # loopback and LAN round trips are far below this
# After the parked calls are answered, how long the gRPC server may take to close; anything still
# open then is cancelled by gRPC. The close takes at most QUIET_MAX_SECONDS + GOAWAY_SECONDS + STOP_SECONDS.
STOP_SECONDS = 1.0
DEADLINE_MARGIN = 0.05  # answer a parked call this long before its deadline, not after


class CloseGate:
    """Parks new calls while the gRPC server closes; see the module docstring."""

    def __init__(self) -> None:
        self.closing = False
        self.last_arrival = 0.0  # time.monotonic() of the latest call
        self.last_answer = 0.0  # time.monotonic() of the latest call that ended
        self.parked = 0  # calls waiting here now
        self._closed = asyncio.Event()

    def arrived(self) -> None:
        self.last_arrival = time.monotonic()

    def answered(self) -> None:
        self.last_answer = time.monotonic()

    def park(self) -> None:
        """From now on new calls wait here until the port has closed."""
        self.closing = True

    async def hold(self, deadline: float | None) -> None:
        """Return at once unless closing; then once the port has closed (or near ``deadline``)."""
        if not self.closing:
            return
        self.parked += 1
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic() - DEADLINE_MARGIN)
        try:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._closed.wait(), timeout)
        finally:
            self.parked -= 1

    async def close(self, server: grpc.aio.Server) -> None:
        """Park new calls, wait for a quiet moment, shut the server down, answer the parked calls."""
        self.park()
        await self._quiet_moment()
        stop = asyncio.ensure_future(server.stop(STOP_SECONDS))
        await asyncio.sleep(GOAWAY_SECONDS)  # the core sends GOAWAY as the shutdown starts
        self._closed.set()
        await stop

    async def _quiet_moment(self) -> None:
        end = time.monotonic() + QUIET_MAX_SECONDS
        await asyncio.sleep(0)  # answers already scheduled (abandoned calls) go out before the count starts
        while time.monotonic() < end and time.monotonic() - max(self.last_arrival, self.last_answer) < QUIET_SECONDS:
            await asyncio.sleep(0.01)

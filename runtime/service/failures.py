"""How a request ends when it does not end OK: the Failure exception and its wire forms.

The servicer raises :class:`Failure` wherever a request stops (validation, queue, model,
drain); a unary call turns it into the call's status with the rich error model in the
``grpc-status-details-bin`` trailer, a stream item into its response's ``error``.

    raise Failure.of(grpc.StatusCode.UNAVAILABLE, "the server is shutting down")
    await context.abort(failure.code, failure.status.message, trailing_metadata=details(failure.status))
"""

from __future__ import annotations

import grpc
from google.rpc import error_details_pb2, status_pb2

from guardedge.runtime.service import convert
from guardedge.v1 import guard_pb2 as pb

SHUTTING_DOWN = "the server is shutting down"
SHUTDOWN_UNANSWERED = "the server is shutting down and its grace period ran out before this request was answered; send it again"
STREAM_DRAINED = "the server is shutting down; requests it had read were answered, send any without an answer again"


class Failure(Exception):
    """A request ends with this status (code, message, details)."""

    index: int | None = None  # which input of a batch of them (the HTTP moderation API's array)

    def __init__(self, status: status_pb2.Status):
        super().__init__(status.message)
        self.status = status

    @classmethod
    def of(cls, code: grpc.StatusCode, message: str) -> Failure:
        return cls(convert.status(code, message))

    @property
    def code(self) -> grpc.StatusCode:
        return convert.status_code(self.status)


def details(status: status_pb2.Status) -> tuple:
    """Trailing metadata carrying ``status``: clients read google.rpc.Status (with BadRequest) from it."""
    return (("grpc-status-details-bin", status.SerializeToString()),)


def bad_request_detail(status: status_pb2.Status) -> error_details_pb2.BadRequest:
    """The BadRequest packed in ``status`` (empty when it has none)."""
    detail = error_details_pb2.BadRequest()
    if status.details:
        status.details[0].Unpack(detail)
    return detail


def stream_error(request_id: str, failure: Failure) -> pb.ClassifyResponse:
    """A stream item's answer when it fails: the stream goes on, this response carries the status."""
    return pb.ClassifyResponse(request_id=request_id, error=failure.status)

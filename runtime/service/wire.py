"""Bounded checks on a request's raw bytes, before protobuf builds a single Python object.

gRPC hands the server's deserializer the message bytes; this module is that deserializer.
Parsing first and counting after is what let one 8 MB message of 4 M empty ``messages`` take
86 s and 8 GB before the 64-message limit applied: protobuf materialises every repeated entry.
So the repeated fields that cost memory per entry (messages, content parts, policy categories,
excluded categories) are counted on the wire first, walking field headers and jumping over
values, and counting stops at the first entry past a limit. The work is therefore bounded by the
limits, never by the message size: at most about (64 + 16) x (64 + 16) field headers.

The deserializer never raises: a message that is not valid protobuf, or over a count limit,
becomes a :class:`Rejected` carrying the INVALID_ARGUMENT status the servicer answers with (an
exception in a deserializer would surface as UNKNOWN with a traceback, and in a stream it
left the call hanging).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import grpc
from google.protobuf.message import DecodeError, Message
from google.rpc import status_pb2

from guardedge.runtime.errors import FieldViolation, InvalidRequest
from guardedge.runtime.requests import MAX_CATEGORIES
from guardedge.runtime.service import convert
from guardedge.v1 import guard_pb2 as pb

# Fields we do not expect (a newer client's, or padding) are allowed, a few of them: the cap on
# field headers per level is what keeps a message of millions of tiny unknown fields cheap too.
SLACK_FIELDS = 16
MAX_PARTS = 64  # content parts per message: the model takes one image and bounded text anyway


@dataclass(frozen=True)
class WireLimits:
    max_messages: int = 64
    max_parts: int = MAX_PARTS
    max_categories: int = MAX_CATEGORIES
    max_excluded: int = MAX_CATEGORIES


@dataclass(frozen=True)
class Rejected:
    """What the deserializer returns for bytes it will not parse; ``status`` is the answer."""

    status: status_pb2.Status


class _Refused(Exception):
    def __init__(self, field: str, description: str):
        super().__init__(description)
        self.violation = FieldViolation(field, description)


def classify_deserializer(limits: WireLimits) -> Callable[[bytes], pb.ClassifyRequest | Rejected]:
    """The request deserializer of Classify and ClassifyStream under ``limits``."""

    def deserialize(data: bytes) -> pb.ClassifyRequest | Rejected:
        try:
            check_counts(data, limits)
        except _Refused as exc:
            return Rejected(convert.bad_request(InvalidRequest(exc.violation)))
        return parse(pb.ClassifyRequest, data)

    return deserialize


def register(servicer, server: grpc.aio.Server, limits: WireLimits, received: Callable[[int], None] | None = None) -> None:
    """Add GuardService to ``server`` as the generated code does, with these deserializers;
    ``received(n)`` is told the size of every classify message (runtime/service/memory.py)."""
    checked = classify_deserializer(limits)

    def classify(data: bytes) -> pb.ClassifyRequest | Rejected:
        if received is not None:
            received(len(data))
        return checked(data)

    handlers = {
        "Classify": grpc.unary_unary_rpc_method_handler(
            servicer.Classify, request_deserializer=classify, response_serializer=pb.ClassifyResponse.SerializeToString),
        "ClassifyStream": grpc.stream_stream_rpc_method_handler(
            servicer.ClassifyStream, request_deserializer=classify, response_serializer=pb.ClassifyResponse.SerializeToString),
        "ListModels": grpc.unary_unary_rpc_method_handler(
            servicer.ListModels, request_deserializer=lambda data: parse(pb.ListModelsRequest, data),
            response_serializer=pb.ListModelsResponse.SerializeToString),
    }
    name = pb.DESCRIPTOR.services_by_name["GuardService"].full_name
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(name, handlers),))
    server.add_registered_method_handlers(name, handlers)


def parse(kind: type[Message], data: bytes) -> Message | Rejected:
    """``kind.FromString(data)``, or a Rejected naming the message type."""
    try:
        return kind.FromString(data)
    except (DecodeError, ValueError, RuntimeError) as exc:
        description = f"is not a valid {kind.DESCRIPTOR.full_name} ({_short(exc)})"
        return Rejected(convert.bad_request(InvalidRequest(FieldViolation("request", description))))


def check_counts(data: bytes, limits: WireLimits) -> None:
    """Raise _Refused at the first repeated field past its limit (or on bytes that are not protobuf)."""
    messages = categories = excluded = 0
    for number, start, end in _fields(data, 0, len(data), limits.max_messages + SLACK_FIELDS, "request"):
        if number == 3:  # ClassifyRequest.messages
            if messages >= limits.max_messages:
                raise _Refused("messages", f"has more than {limits.max_messages} messages; the limit is {limits.max_messages}")
            _check_parts(data, start, end, messages, limits.max_parts)
            messages += 1
        elif number == 4:  # ClassifyRequest.policy (a repeated occurrence merges, so counts add up)
            for inner, _, _ in _fields(data, start, end, limits.max_categories + limits.max_excluded + SLACK_FIELDS, "policy"):
                categories += inner == 1
                excluded += inner == 2
            if categories > limits.max_categories:
                raise _Refused("policy.categories", f"has more than {limits.max_categories} categories; the limit is {limits.max_categories}")
            if excluded > limits.max_excluded:
                raise _Refused("policy.excluded_categories", f"lists more than {limits.max_excluded} codes; the limit is {limits.max_excluded}")


def _check_parts(data: bytes, start: int, end: int, index: int, max_parts: int) -> None:
    where = f"messages[{index}]"
    parts = sum(1 for number, _, _ in _fields(data, start, end, max_parts + SLACK_FIELDS, where) if number == 2)
    if parts > max_parts:
        raise _Refused(f"{where}.content", f"has more than {max_parts} parts; the limit is {max_parts}")


def _fields(data: bytes, pos: int, end: int, max_fields: int, where: str) -> Iterator[tuple[int, int, int]]:
    """(field number, value start, value end) of each length-delimited field; others are skipped."""
    count = 0
    while pos < end:
        count += 1
        if count > max_fields:
            raise _Refused(where, f"has more than {max_fields} fields; no valid request has that many")
        key, pos = _varint(data, pos, end, where)
        number, wire_type = key >> 3, key & 7
        if wire_type == 0:
            _, pos = _varint(data, pos, end, where)
        elif wire_type == 1:
            pos += 8
        elif wire_type == 5:
            pos += 4
        elif wire_type == 2:
            size, pos = _varint(data, pos, end, where)
            if pos + size > end:
                raise _Refused(where, "is not valid protobuf (a field runs past the end of its message)")
            yield number, pos, pos + size
            pos += size
        else:  # groups (3, 4) do not exist in proto3; 6 and 7 are not wire types
            raise _Refused(where, f"is not valid protobuf (wire type {wire_type})")
        if number == 0 or pos > end:
            raise _Refused(where, "is not valid protobuf (bad field header or truncated value)")


def _varint(data: bytes, pos: int, end: int, where: str) -> tuple[int, int]:
    result = shift = 0
    while pos < end and shift < 64:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
    raise _Refused(where, "is not valid protobuf (truncated or overlong varint)")


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 120 else text[:120] + "..."

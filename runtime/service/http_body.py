"""Read an HTTP request's JSON body under the gRPC path's limits, before it grows into objects.

In order, each check before the work it guards:

1. ``Content-Length`` over ``max_message_bytes``: 413 before a byte of the body is read
   (a chunked body is cut off by aiohttp's ``client_max_size`` at the same size, also 413);
2. the body must arrive within ``body_seconds``: a client dripping it gets 408;
3. structure is counted on the raw bytes before parsing: JSON's values are separated by commas
   and opened by ``[``/``{``, so their count bounds the Python objects ``json.loads`` would make.
   Base64 images have none of those characters, so an ordinary request passes on three
   ``bytes.count`` calls; only a body with more than MAX_JSON_VALUES of them (counting inside
   strings too) is scanned again with its strings blanked out, and refused if still over.
   Otherwise 32 MB of ``{},`` would be 10 M dicts (about 1 GB) before any limit applied: the
   JSON twin of the 4 M empty protobuf messages that took 86 s and 8 GB (wire.py);
4. parsing (on a worker thread for bodies over OFFLOAD_BYTES, so the event loop keeps serving
   probes and other requests): invalid JSON, too deep nesting or a number of 5 000 digits is 400.

    obj = await read_json(request, max_bytes=32 << 20, body_seconds=30.0)   # raises BodyRefused
"""

from __future__ import annotations

import asyncio
import json
import re

from aiohttp import web

MAX_JSON_VALUES = 20_000  # a valid request has at most ~64 inputs x 64 parts x a few fields, plus policies
OFFLOAD_BYTES = 256 * 1024
BODY_SECONDS = 30.0
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')


class BodyRefused(Exception):
    """The body is refused before any request is built: ``status`` (400/408/413), ``field``, ``description``."""

    def __init__(self, status: int, field: str, description: str):
        super().__init__(description)
        self.status, self.field, self.description = status, field, description


async def read_json(request: web.Request, max_bytes: int, body_seconds: float = BODY_SECONDS) -> object:
    length = request.content_length
    if length is not None and length > max_bytes:
        raise BodyRefused(413, "request", f"the body is {length} bytes; the limit is {max_bytes} (max_message_bytes)")
    try:
        body = await asyncio.wait_for(request.read(), body_seconds)
    except asyncio.TimeoutError:
        raise BodyRefused(408, "request", f"the body did not arrive within {body_seconds:g} s") from None
    except web.HTTPRequestEntityTooLarge:
        raise BodyRefused(413, "request", f"the body is over {max_bytes} bytes (max_message_bytes)") from None
    if len(body) > OFFLOAD_BYTES:
        return await asyncio.to_thread(parse, body)
    return parse(body)


def parse(body: bytes) -> object:
    """``json.loads`` of a bounded body; BodyRefused(400) for what is not one JSON value we accept."""
    values = count_values(body)
    if values > MAX_JSON_VALUES:
        raise BodyRefused(400, "request", f"has more than {MAX_JSON_VALUES} JSON values; no valid request has that many")
    if not body.strip():
        raise BodyRefused(400, "request", "the body is empty; send a JSON object")
    try:
        return json.loads(body)
    except RecursionError:
        raise BodyRefused(400, "request", "nests JSON too deeply") from None
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError, int digits limit, bad UTF-8
        raise BodyRefused(400, "request", f"is not valid JSON ({str(exc)[:120]})") from None


def count_values(body: bytes) -> int:
    """An upper bound on the JSON values ``body`` holds (module docstring, step 3)."""
    def structural(data: bytes) -> int:
        return data.count(b",") + data.count(b"[") + data.count(b"{")

    quick = structural(body)
    if quick <= MAX_JSON_VALUES:
        return quick
    return structural(_STRING.sub(b'""', body))

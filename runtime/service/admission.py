"""Admission of a request on arrival, per model, before anything is parsed or decoded (issue 19, item 2).

A request for a model needs two things at once, or it is refused at once with RESOURCE_EXHAUSTED:

- a **request slot**: at most ``max_queue_size`` requests of the model wait (being preprocessed or
  queued for a batch; runtime/service/batcher.py counts them);
- its image's **decoded bytes**: the bytes decoding will hold (runtime/images.py ``decode_bytes``,
  read from the image header in microseconds) must fit in the model's ``max_decoded_bytes`` next
  to the images of its other requests not yet encoded. The bytes are given back once the image is
  encoded (or refused); a request without an image costs none.

So what a model's admitted requests hold is a formula (docs/service.md "Memory per model"), whatever
callers send: the queue bound alone let 200 concurrent 5.8 MB JPEGs hold 4 GB where the sizing
said 1.1 GB. One image larger than the whole budget is still admitted when the model decodes
nothing else, so every image within the request limits can be classified.

    budget = ByteBudget(max_decoded_bytes)
    if not budget.reserve(cost): refuse
    ...; budget.release(cost)
"""

from __future__ import annotations

from guardedge.runtime.images import peek_decode_bytes
from guardedge.v1 import guard_pb2 as pb


class ByteBudget:
    """Bytes in flight against a limit; used on the event loop only (no lock)."""

    def __init__(self, limit: int):
        self.limit = limit
        self.in_flight = 0
        self.holders = 0  # reservations not yet released

    def reserve(self, cost: int) -> bool:
        """Take ``cost`` bytes if they fit, or if nothing else is reserved; False otherwise."""
        if cost <= 0:
            return True
        if self.holders and self.in_flight + cost > self.limit:
            return False
        self.in_flight += cost
        self.holders += 1
        return True

    def release(self, cost: int) -> None:
        if cost > 0:
            self.in_flight -= cost
            self.holders -= 1


def image_cost(request: pb.ClassifyRequest) -> int:
    """The decoded bytes of the request's images, from their headers (0 for what cannot be read:
    validation refuses it later, naming the field)."""
    return sum(peek_decode_bytes(part.image.data) for message in request.messages
               for part in message.content if part.WhichOneof("part") == "image")

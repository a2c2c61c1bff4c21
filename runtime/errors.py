"""Errors the library raises on purpose, each naming what is wrong so callers can fix it.

``InvalidRequest`` carries field violations (field path + problem) so the CLI can print them and
the gRPC layer can map them one-to-one onto ``google.rpc.BadRequest``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FieldViolation:
    field: str  # e.g. "messages[1].content[0].image"
    description: str


class GuardError(Exception):
    """Base class of every error guardedge raises deliberately."""


class InvalidRequest(GuardError, ValueError):
    """The request is malformed; ``violations`` says where and why."""

    index: int | None = None  # which input of a batch of them (the HTTP moderation API's array)

    def __init__(self, violations: list[FieldViolation] | FieldViolation):
        if isinstance(violations, FieldViolation):
            violations = [violations]
        self.violations = tuple(violations)
        super().__init__("; ".join(f"{v.field}: {v.description}" for v in self.violations))


class ModelLoadError(GuardError):
    """A model directory or artifact cannot be loaded (missing files, pickle weights, ...)."""


def invalid(field: str, description: str) -> InvalidRequest:
    return InvalidRequest(FieldViolation(field, description))

"""The values every annotation source yields (shared by sources.py and the table and shard
readers it dispatches to, which is why they live apart from it)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


class SourceError(ValueError):
    """The input cannot be read as asked (missing path, unknown format, missing column)."""


@dataclass(frozen=True)
class Item:
    """One thing to annotate: its key and the classify request for it, or why there is none."""

    key: str
    request: dict | None
    base_dir: Path | None = None  # relative image paths resolve here
    error: str = ""  # the source could not make a request of it (the row records this)


@dataclass(frozen=True)
class Columns:
    """Which table columns (or WebDataset extensions) hold what; None picks the default."""

    key: str | None = None
    image: str | None = None
    text: str | None = None  # opt-in: the user's text (LlavaGuard, for one, reads none)
    response: str | None = None  # opt-in: the assistant's reply (response classification)

"""Where items come from: a folder of images, a JSONL of requests, Parquet/CSV, WebDataset shards.

Every source streams: it yields one :class:`Item` at a time (a key and a classify request whose
images are paths or bytes, never decoded here), so a dataset is never held whole. Images are
decoded later, by the runner's workers (``engine.parse``). Keys are stable across runs, which is
what resumption skips by:

- folder (recursive; .png .jpg .jpeg .webp .gif .bmp): the path relative to the folder;
- JSONL: the request's ``request_id``, else ``line-N``;
- Parquet / CSV (runtime/annotate/tables.py): ``--key-column`` (default: a column named key, id or
  __key__), else ``FILE:ROW``;
- WebDataset (runtime/annotate/shards.py): ``SHARD/__key__``.

    from guardedge.runtime.annotate.sources import open_source
    source = open_source(["photos/"])
    for item in source: ...
"""

from __future__ import annotations

import glob
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Literal

from guardedge.runtime.annotate.items import Columns, Item, SourceError

__all__ = ["Columns", "Format", "Item", "Source", "SourceError", "open_source"]

Format = Literal["folder", "jsonl", "parquet", "csv", "webdataset"]
FORMATS: tuple[Format, ...] = ("folder", "jsonl", "parquet", "csv", "webdataset")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp")
MAX_LINE_BYTES = 64 * 1024 * 1024  # a JSONL line: a 20 MiB image in base64 is 27 MiB


@dataclass(frozen=True)
class Source:
    paths: tuple[Path, ...]
    format: Format
    columns: Columns
    max_image_bytes: int = 20 * 1024 * 1024  # a shard member larger than this is an error row, unread

    def __iter__(self) -> Iterator[Item]:
        for path in self.paths:
            yield from _functions(self.format)[0](self, path)

    def total(self) -> int | None:
        """Items in the source when that is cheap to know (for the progress bar's ETA), else None."""
        counts = [_functions(self.format)[1](self, path) for path in self.paths]
        return None if any(c is None for c in counts) else sum(counts)

    def describe(self) -> dict:
        return {"format": self.format, "paths": [str(p) for p in self.paths]}


def open_source(inputs: list[str], format: str = "auto", columns: Columns | None = None,
                max_image_bytes: int = 20 * 1024 * 1024) -> Source:
    """Expand globs, check the paths exist and decide the format (SourceError says what is wrong)."""
    paths = expand(inputs)
    fmt = detect(paths) if format == "auto" else _format(format)
    if fmt == "webdataset":
        paths = _shards(paths)
    elif fmt in ("parquet", "csv"):
        paths = _files_of(paths, f".{fmt}")
    elif fmt == "folder" and not all(p.is_dir() for p in paths):
        raise SourceError("--format folder takes directories")
    return Source(tuple(paths), fmt, columns or Columns(), max_image_bytes)


def expand(inputs: list[str]) -> list[Path]:
    paths: list[Path] = []
    for raw in inputs:
        matches = sorted(glob.glob(os.path.expanduser(raw))) if glob.has_magic(raw) else [os.path.expanduser(raw)]
        if not matches or not all(os.path.exists(m) for m in matches):
            raise SourceError(f"--input {raw}: no such file or directory")
        paths.extend(Path(m).resolve() for m in matches)
    if not paths:
        raise SourceError("give at least one --input")
    return paths


def _format(name: str) -> Format:
    for fmt in FORMATS:
        if fmt == name:
            return fmt
    raise SourceError(f"unknown --format {name!r}; choose one of {', '.join(FORMATS)}")


def detect(paths: list[Path]) -> Format:
    """The format the paths' suffixes (or a directory's contents) say."""
    kinds = {_kind(p) for p in paths}
    if len(kinds) != 1:
        raise SourceError(f"--input mixes formats ({', '.join(sorted(kinds))}); give one kind, or --format")
    return kinds.pop()


def _kind(path: Path) -> Format:
    if path.is_dir():
        entries = [p.name for p in path.iterdir()]
        containers: tuple[tuple[str, Format], ...] = ((".tar", "webdataset"), (".parquet", "parquet"))
        for suffix, fmt in containers:
            if entries and all(e.endswith(suffix) or e.startswith((".", "_")) for e in entries):
                return fmt  # a directory of shards, or a Parquet dataset
        return "folder"
    name = path.name.lower()
    files: tuple[tuple[tuple[str, ...], Format], ...] = (
        ((".jsonl", ".json", ".ndjson"), "jsonl"), ((".parquet",), "parquet"), ((".csv",), "csv"),
        ((".tar", ".tar.gz", ".tgz"), "webdataset"))
    for suffixes, fmt in files:
        if name.endswith(suffixes):
            return fmt
    raise SourceError(f"--input {path}: cannot tell the format from its name; give --format ({', '.join(FORMATS)})")


def _files_of(paths: list[Path], suffix: str) -> list[Path]:
    out = [f for p in paths for f in (sorted(p.glob(f"*{suffix}")) if p.is_dir() else [p])]
    if not out:
        raise SourceError(f"--input holds no {suffix} file")
    return out


def _shards(paths: list[Path]) -> list[Path]:
    out = [f for p in paths for f in (sorted(q for q in p.iterdir() if q.name.endswith((".tar", ".tar.gz", ".tgz")))
                                      if p.is_dir() else [p])]
    if not out:
        raise SourceError("--input holds no WebDataset shard (.tar)")
    return out


# -- folder ------------------------------------------------------------------------------------

def folder_request(path: str | Path) -> dict:
    return {"messages": [{"role": "user", "content": [{"type": "image", "path": str(path)}]}]}


def folder_files(root: Path) -> Iterator[Path]:
    """Image files under ``root``, in a deterministic order (sorted walk)."""
    for directory, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            if name.lower().endswith(IMAGE_SUFFIXES) and not name.startswith("."):
                yield Path(directory) / name


def _folder(source: Source, root: Path) -> Iterator[Item]:
    for path in folder_files(root):
        yield Item(path.relative_to(root).as_posix(), folder_request(path))


def _count_folder(source: Source, root: Path) -> int:
    return sum(1 for _ in folder_files(root))


# -- JSONL -------------------------------------------------------------------------------------

def jsonl_key(obj: object, number: int) -> str:
    rid = obj.get("request_id") if isinstance(obj, dict) else None
    return rid if isinstance(rid, str) and rid else f"line-{number}"


def _jsonl(source: Source, path: Path) -> Iterator[Item]:
    with open(path, "rb") as f:
        number = 0
        while line := f.readline(MAX_LINE_BYTES + 1):
            number += 1
            if len(line) > MAX_LINE_BYTES and not line.endswith(b"\n"):
                while (rest := f.readline(MAX_LINE_BYTES)) and not rest.endswith(b"\n"):
                    pass  # skip the rest of an oversized line without holding it
                yield Item(f"line-{number}", None, error=f"line {number} is longer than {MAX_LINE_BYTES} bytes")
                continue
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                yield Item(f"line-{number}", None, error=f"line {number} is not valid JSON ({exc})")
                continue
            yield Item(jsonl_key(obj, number), obj, path.parent)


def _count_lines(source: Source, path: Path) -> int:
    count = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            count += chunk.count(b"\n")
    return count


def _functions(fmt: str):
    """(reader, counter) of a format (tables and shards imported when a source is read: pyarrow is
    loaded only for Parquet)."""
    from guardedge.runtime.annotate import shards, tables

    return {"folder": (_folder, _count_folder), "jsonl": (_jsonl, _count_lines),
            "parquet": (tables.parquet_items, tables.parquet_rows), "csv": (tables.csv_items, tables.csv_rows),
            "webdataset": (shards.shard_items, shards.count_samples)}[fmt]

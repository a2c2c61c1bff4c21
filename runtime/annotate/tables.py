"""Parquet and CSV rows as items: an image column (paths, bytes, or Hugging Face image structs
``{"bytes", "path"}``), optional text columns, an optional key column.

Defaults when a column is not named: the image is the first of ``image``, ``image_path``,
``path``, ``file``, ``filename``, ``jpg``, ``png`` present; the key is the first of ``key``,
``id``, ``__key__`` present, else ``FILE:ROW`` (row numbers count from 0 per file). Text and
response columns are opt-in (``--text-column``, ``--response-column``): a family such as
LlavaGuard reads no message text and refuses it. Relative image paths resolve against the
table's own directory. Parquet is read in record batches of 256 rows (only the needed columns),
CSV one line at a time.

The same :func:`row_item` turns a Ray Data row into an item (runtime/annotate/ray_path.py), so
both paths build identical requests.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from guardedge.runtime.annotate.items import Columns, Item, SourceError

if TYPE_CHECKING:
    from guardedge.runtime.annotate.sources import Source

IMAGE_COLUMNS = ("image", "image_path", "path", "file", "filename", "jpg", "png")
KEY_COLUMNS = ("key", "id", "__key__")
BATCH_ROWS = 256


def resolve_columns(names: list[str], columns: Columns, where: str) -> Columns:
    """The columns to read, defaults filled in; SourceError names a column that is not there."""
    for flag, name in (("--key-column", columns.key), ("--image-column", columns.image),
                       ("--text-column", columns.text), ("--response-column", columns.response)):
        if name is not None and name not in names:
            raise SourceError(f"{where}: {flag} {name!r} is not a column (columns: {', '.join(names)})")
    image = columns.image or next((c for c in IMAGE_COLUMNS if c in names), None)
    key = columns.key or next((c for c in KEY_COLUMNS if c in names), None)
    if image is None and columns.text is None:
        raise SourceError(f"{where}: no image column ({', '.join(IMAGE_COLUMNS)}) and no --text-column; "
                          f"name one with --image-column (columns: {', '.join(names)})")
    return Columns(key, image, columns.text, columns.response)


def image_part(value: object) -> dict | str:
    """A request image part from a cell, or a string saying why the cell holds none."""
    if isinstance(value, dict):  # a Hugging Face datasets Image struct
        value = value.get("bytes") or value.get("path")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"type": "image", "bytes": bytes(value)}
    if isinstance(value, str) and value:
        return {"type": "image", "path": value}
    return f"the image cell is empty or not a path or bytes ({type(value).__name__})"


def row_request(row: dict, columns: Columns) -> dict | str:
    """The classify request of one row (user turn: image, then text; assistant turn: response)."""
    content: list[dict] = []
    if columns.image is not None and row.get(columns.image) is not None:
        part = image_part(row[columns.image])
        if isinstance(part, str):
            return part
        content.append(part)
    text = row.get(columns.text) if columns.text else None
    if text is not None:
        content.append({"type": "text", "text": str(text)})
    if not content:
        return "the row has neither an image nor text"
    messages = [{"role": "user", "content": content}]
    response = row.get(columns.response) if columns.response else None
    if response is not None:
        messages.append({"role": "assistant", "content": [{"type": "text", "text": str(response)}]})
    return {"messages": messages}


def row_key(row: dict, columns: Columns, fallback: str) -> str:
    value = row.get(columns.key) if columns.key else None
    return fallback if value is None or value == "" else str(value)


def row_item(row: dict, columns: Columns, base_dir: Path | None, fallback_key: str) -> Item:
    key = row_key(row, columns, fallback_key)
    request = row_request(row, columns)
    if isinstance(request, str):
        return Item(key, None, base_dir, error=request)
    return Item(key, request, base_dir)


def _needed(columns: Columns) -> list[str]:
    return [c for c in (columns.key, columns.image, columns.text, columns.response) if c is not None]


def parquet_items(source: Source, path: Path) -> Iterator[Item]:
    import pyarrow.parquet as pq

    with pq.ParquetFile(path) as table:
        columns = resolve_columns(table.schema_arrow.names, source.columns, str(path))
        number = 0
        for batch in table.iter_batches(batch_size=BATCH_ROWS, columns=_needed(columns)):
            for row in batch.to_pylist():
                yield row_item(row, columns, path.parent, f"{path.name}:{number}")
                number += 1


def parquet_rows(source: Source, path: Path) -> int:
    import pyarrow.parquet as pq

    with pq.ParquetFile(path) as table:
        return table.metadata.num_rows


def csv_items(source: Source, path: Path) -> Iterator[Item]:
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        columns = resolve_columns(list(reader.fieldnames or []), source.columns, str(path))
        for number, row in enumerate(reader):
            yield row_item({k: (v if v != "" else None) for k, v in row.items()}, columns, path.parent,
                           f"{path.name}:{number}")


def csv_rows(source: Source, path: Path) -> int | None:
    return None  # quoted fields may span lines: counting would mean parsing twice

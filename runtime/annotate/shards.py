"""WebDataset tar shards as items: consecutive members sharing a key form one sample.

WebDataset's convention (also Ray Data's ``read_webdataset``): a member ``dir/000123.jpg`` has
key ``dir/000123`` and extension ``jpg`` (the extension starts at the first dot of the file
name). A sample's images are its members with an image extension (jpg, jpeg, png, webp, gif,
bmp), in extension order, so a sample may carry several; its text is the member named by
``--text-column`` (e.g. ``txt``), decoded as UTF-8, only when asked. The item key is
``SHARD/KEY`` with the shard's file name, so moving the shards keeps the keys.

Shards are read as a stream (``tarfile`` mode ``r|*``, gzip too); a member larger than the
image byte cap is never read (the sample becomes an error row).
"""

from __future__ import annotations

import re
import tarfile
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Mapping

from guardedge.runtime.annotate.items import Item

if TYPE_CHECKING:
    from guardedge.runtime.annotate.sources import Source

IMAGE_EXTENSIONS = ("bmp", "gif", "jpeg", "jpg", "png", "webp")
_KEY = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$")  # webdataset's (and Ray Data's) base_plus_ext


def split_member(name: str) -> tuple[str, str] | None:
    match = _KEY.match(name)
    return (match.group(1), match.group(2).lower()) if match else None


def sample_item(shard: str, key: str, members: Mapping[str, bytes | str], text_ext: str | None) -> Item:
    """The item of one sample; ``members`` maps extension -> bytes (or an error string)."""
    item_key = f"{shard}/{key}"
    problems = [f"{ext}: {value}" for ext, value in members.items() if isinstance(value, str)]
    if problems:
        return Item(item_key, None, error="; ".join(problems))
    data = {ext: value for ext, value in members.items() if isinstance(value, bytes)}  # all of them, now
    content: list[dict] = [{"type": "image", "bytes": data[ext]} for ext in sorted(data) if ext in IMAGE_EXTENSIONS]
    if text_ext is not None and text_ext in data:
        content.append({"type": "text", "text": data[text_ext].decode("utf-8", "replace")})
    if not content:
        return Item(item_key, None, error=f"the sample has no image member ({', '.join(IMAGE_EXTENSIONS)}); "
                                          f"it has: {', '.join(sorted(members)) or 'nothing'}")
    return Item(item_key, {"messages": [{"role": "user", "content": content}]})


def _samples(source: Source, path: Path) -> Iterator[tuple[str, dict[str, bytes | str]]]:
    wanted = set(IMAGE_EXTENSIONS) | ({source.columns.text} if source.columns.text else set())
    key: str | None = None
    members: dict[str, bytes | str] = {}
    with tarfile.open(path, "r|*") as tar:
        for member in tar:
            parts = split_member(member.name) if member.isfile() else None
            if parts is None:
                continue
            if parts[0] != key:
                if key is not None:
                    yield key, members
                key, members = parts[0], {}
            ext = parts[1]
            if ext not in wanted:
                members.setdefault(ext, b"")  # recorded (for the error text), never read
            elif member.size > source.max_image_bytes:
                members[ext] = f"member is {member.size} bytes; the limit is {source.max_image_bytes}"
            else:
                file = tar.extractfile(member)
                assert file is not None, "only regular files (member.isfile()) get this far"
                members[ext] = file.read()
    if key is not None:
        yield key, members


def shard_items(source: Source, path: Path) -> Iterator[Item]:
    for key, members in _samples(source, path):
        yield sample_item(path.name, key, members, source.columns.text)


def count_samples(source: Source, path: Path) -> int | None:
    """Samples in an uncompressed shard, from its headers alone (tarfile seeks over the data)."""
    if not path.name.endswith(".tar"):
        return None
    keys, last = 0, None
    with tarfile.open(path, "r:") as tar:
        for member in tar:
            parts = split_member(member.name) if member.isfile() else None
            if parts is not None and parts[0] != last:
                keys, last = keys + 1, parts[0]
    return keys

"""Small datasets for the annotate tests and bench: the same images as a folder, a Parquet file,
WebDataset shards and a JSONL, built from both demo guards' own image generators (flat hazard
colours and busy safe "photos"), plus the broken items a real dataset has (a corrupt image, a
non-image file, an empty shard sample).

    import annotate_data; annotate_data.write_all(tmp_path, n=12)
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

CORRUPT = b"\x89PNG\r\n\x1a\n" + b"not really a png"


def images(n: int) -> list[tuple[str, bytes]]:
    """``n`` (name, PNG bytes): LlavaGuard hazard colours, safe photos and Llama Guard demo colours, in turn."""
    from guardedge.runtime.demo.data import IMAGE_COLOURS, SAFE_COLOURS, ImageSpec
    from guardedge.runtime.demo.llavaguard.data import HAZARD_COLOURS, Image

    hazards, unsafe = list(HAZARD_COLOURS.values()), list(IMAGE_COLOURS.values())
    out = []
    for i in range(n):
        size = (96 + 8 * (i % 3), 64 + 8 * (i % 2))
        kind = i % 4
        if kind == 0:
            picture = Image(hazards[i % len(hazards)], size, i).render()
        elif kind == 1:
            picture = Image((0, 0, 0), size, i, "photo").render()
        elif kind == 2:
            picture = ImageSpec(unsafe[i % len(unsafe)], size, seed=i).render()
        else:
            picture = ImageSpec(SAFE_COLOURS[i % len(SAFE_COLOURS)], size, seed=i).render()
        buffer = io.BytesIO()
        picture.save(buffer, format="PNG")
        out.append((f"img{i:04d}", buffer.getvalue()))
    return out


def write_folder(root: Path, n: int, broken: bool = True) -> Path:
    """Images in two levels of folders, plus (``broken``) a corrupt PNG and a text file that is skipped."""
    for i, (name, data) in enumerate(images(n)):
        path = root / ("a" if i % 2 else "b/c") / f"{name}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    if broken:
        (root / "a" / "broken.png").write_bytes(CORRUPT)
        (root / "a" / "notes.txt").write_text("not an image")
    return root


def write_parquet(path: Path, n: int, broken: bool = True, row_group: int = 4) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"key": name, "image": data} for name, data in images(n)]
    if broken:
        rows.insert(1, {"key": "broken", "image": CORRUPT})
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=row_group)
    return path


def write_shards(root: Path, n: int, per_shard: int = 5, broken: bool = True) -> Path:
    """Shards of ``per_shard`` samples (png + json); ``broken`` adds a corrupt image and a sample without one."""
    root.mkdir(parents=True, exist_ok=True)
    samples = [(name, {"png": data, "json": json.dumps({"i": i}).encode()}) for i, (name, data) in enumerate(images(n))]
    if broken:
        samples.insert(2, ("broken", {"png": CORRUPT}))
        samples.insert(4, ("textonly", {"txt": b"a caption and no image"}))
    for s in range(0, len(samples), per_shard):
        with tarfile.open(root / f"shard-{s // per_shard:05d}.tar", "w") as tar:
            for key, members in samples[s: s + per_shard]:
                for ext, data in sorted(members.items()):
                    info = tarfile.TarInfo(f"{key}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    return root


def write_jsonl(path: Path, n: int) -> Path:
    """Requests whose images are files beside the JSONL (relative paths), plus one malformed line."""
    folder = path.parent / "jsonl-images"
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for name, data in images(n):
        (folder / f"{name}.png").write_bytes(data)
        lines.append(json.dumps({"request_id": name, "messages": [
            {"role": "user", "content": [{"type": "image", "path": f"jsonl-images/{name}.png"}]}]}))
    lines.insert(1, "{not json")
    path.write_text("\n".join(lines) + "\n")
    return path

"""Models in a bundle: each one a manifested artifact, so the site can verify it on arrival.

An export (quantized, ONNX) already has ``manifest.json`` and is copied as it is, after its hashes
are checked. A plain model directory (a Hugging Face download of Llama Guard 3 Vision, the demo
guard) is copied without pickle checkpoints (guardedge never loads them) or hidden folders, and gets
a manifest here (runtime/artifact.py), with the parity-smoke answers recorded unless ``smoke`` is
off, so ``guardedge export verify`` can re-run them at the site.
"""

from __future__ import annotations

import sys
from pathlib import Path

from guardedge.runtime.artifact import MANIFEST, artifact_files, library_versions, source_identity, write_manifest
from guardedge.runtime.modeldir import PICKLE_SUFFIXES
from guardedge.runtime.models import resolve_model as resolve

_CHUNK = 8 * 1024 * 1024


def add_model(spec: str, models_dir: Path, smoke: bool = True) -> dict:
    """Copy model ``spec`` ('demo' or a directory) into ``models_dir/NAME``; returns what was added."""
    model = resolve(spec)  # refuses pickle-only directories and artifacts that fail their manifest
    dest = models_dir / model.name
    if dest.exists():
        raise ValueError(f"two models named {model.name!r}; give each a distinct directory name")
    files = [f for f in artifact_files(model.path) if f.suffix not in PICKLE_SUFFIXES]
    skipped = sorted(f.as_posix() for f in artifact_files(model.path) if f.suffix in PICKLE_SUFFIXES)
    _copy(model.path, dest, files + ([Path(MANIFEST)] if model.manifest else []))
    written = model.manifest is None
    if written:
        from guardedge.runtime.families import family_for_config

        config = model.config
        write_manifest(dest, family=family_for_config(config).name, backend="torch",
                       precision=str(config.get("torch_dtype") or config.get("dtype") or "as-shipped"),
                       components={}, recipe={"bundled": "plain model directory", "skipped_pickle_files": skipped},
                       source=source_identity(model.path, model.name), libraries=library_versions())
        if smoke:
            from guardedge.export.verify import record_smoke

            print(f"[bundle] recording parity-smoke answers of {model.name}", file=sys.stderr, flush=True)
            record_smoke(dest)
    total = sum((dest / f).stat().st_size for f in artifact_files(dest))
    return {"name": model.name, "source": str(model.path), "files": len(artifact_files(dest)), "bytes": total,
            "manifest_written": written, "smoke": bool(smoke or not written)}


def _copy(src: Path, dest: Path, files: list[Path]) -> None:
    """Copy ``files`` (relative) from ``src`` to ``dest`` in chunks, with a progress bar for big models."""
    total = sum((src / f).stat().st_size for f in files)
    bar = None
    if total >= 256 * 1024 * 1024:
        from tqdm import tqdm

        bar = tqdm(total=total, unit="B", unit_scale=True, desc=f"copying {src.name}", file=sys.stderr)
    try:
        for rel in files:
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            with open(src / rel, "rb") as fin, open(dest / rel, "wb") as fout:
                while chunk := fin.read(_CHUNK):
                    fout.write(chunk)
                    if bar:
                        bar.update(len(chunk))
            # Readable by the account that serves it (the image's user 10001, the systemd unit's
            # user); the source may be private to whoever downloaded it (the demo cache is 0600).
            (dest / rel).chmod(0o644)
    finally:
        if bar:
            bar.close()

"""Self-describing artifact directories: ``manifest.json`` says what an export is; hashes guard it.

Every export (bitsandbytes, ONNX) writes a manifest::

    {"format": "guardedge-artifact/1", "family": "llama-guard-3-vision",
     "architecture": "mllama" | "llava_onevision",        # config.json's model_type (ONNX exports)
     "backend": "torch" | "onnxruntime", "precision": "bnb-int8" | "bnb-nf4" | "fp32" | "int4" | ...,
     "components": {"decoder": "decoder.onnx", ...},       # role -> file, for the backend
     "recipe": {...},                                       # the export's options, exactly
     "source": {"name", "path", "sha256"},                 # what it was made from
     "libraries": {"torch": ..., "transformers": ..., ...},
     "validation": {...},                                   # parity figures measured at export
     "files": {"relative/path": "<sha256>", ...},          # every file but the manifest
     "created": "2026-11-23T20:00:00Z"}

Loading an artifact (``modeldir.check``) re-hashes every file and refuses the directory, naming
the file, if one is missing, added or changed. A directory without a manifest is a plain model
directory (e.g. a Hugging Face download) and loads as before.

    guardedge export verify OUT      # the same check from the command line, plus a parity smoke
"""

from __future__ import annotations

import functools
import hashlib
import json
import time
from pathlib import Path
from typing import Iterable

from guardedge.runtime.errors import ModelLoadError

MANIFEST = "manifest.json"
FORMAT = "guardedge-artifact/1"
_CHUNK = 8 * 1024 * 1024


def sha256_file(path: Path, progress=None) -> str:
    """Hash a file in chunks (never the whole file in memory); ``progress(bytes)`` per chunk."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
            if progress is not None:
                progress(len(chunk))
    return digest.hexdigest()


def artifact_files(directory: Path) -> list[Path]:
    """Every regular file under ``directory`` except the manifest, sorted, relative."""
    out = []
    for path in sorted(directory.rglob("*")):
        if path.is_file() and path.name != MANIFEST and not any(part.startswith(".") for part in path.relative_to(directory).parts):
            out.append(path.relative_to(directory))
    return out


def hash_files(directory: Path, files: Iterable[Path], show_progress: bool = False) -> dict[str, str]:
    files = list(files)
    total = sum((directory / f).stat().st_size for f in files)
    bar = _progress_bar(total, f"hashing {directory.name}", show_progress)
    try:
        return {f.as_posix(): sha256_file(directory / f, bar.update if bar else None) for f in files}
    finally:
        if bar:
            bar.close()


def _progress_bar(total: int, desc: str, show: bool):
    if not show or total < 256 * 1024 * 1024:  # small artifacts hash in well under a second
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="B", unit_scale=True, desc=desc)


@functools.lru_cache(maxsize=4)
def source_digest(package: str = "guardedge.runtime") -> str:
    """sha256 of a guardedge package's Python sources: results measured by changed code (a checkout
    between releases, an edit) must not be reused, and the version number alone does not move."""
    import importlib

    module = importlib.import_module(package)
    assert module.__file__ is not None, f"{package} is a regular package (with an __init__.py)"
    return tree_digest(Path(module.__file__).parent)


def tree_digest(root: Path) -> str:
    """sha256 over the relative paths and bytes of every ``*.py`` under ``root``."""
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(f"{path.relative_to(root)}\n".encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def engine_source_digest() -> str:
    """The runtime's sources (the engine, families, preprocessing): see :func:`source_digest`."""
    return source_digest("guardedge.runtime")


def library_versions(*names: str) -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("guardedge", "torch", "transformers", *names):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


def source_identity(model_dir: Path, name: str) -> dict:
    """Name, path and a hash of the source model: config.json plus every weight file's sha256."""
    files = [Path("config.json"), *sorted(p.relative_to(model_dir) for p in model_dir.glob("*.safetensors"))]
    digest = hashlib.sha256()
    for rel, value in hash_files(model_dir, files).items():
        digest.update(f"{rel}\0{value}\n".encode())
    return {"name": name, "path": str(model_dir), "sha256": digest.hexdigest()}


def write_manifest(
    directory: Path,
    *,
    family: str,
    backend: str,
    architecture: str | None = None,
    precision: str,
    components: dict[str, str],
    recipe: dict,
    source: dict,
    validation: dict | None = None,
    libraries: dict[str, str] | None = None,
    show_progress: bool = True,
) -> dict:
    """Hash every file in ``directory`` and write its manifest; returns the manifest."""
    directory = Path(directory)
    missing = [f for f in components.values() if not (directory / f).is_file()]
    if missing:
        raise ModelLoadError(f"manifest for {directory}: component files {missing} do not exist")
    manifest = {
        "format": FORMAT,
        "family": family,
        **({"architecture": architecture} if architecture else {}),
        "backend": backend,
        "precision": precision,
        "components": components,
        "recipe": recipe,
        "source": source,
        "libraries": libraries or library_versions(),
        "validation": validation or {},
        "files": hash_files(directory, artifact_files(directory), show_progress),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def set_validation(directory: Path, validation: dict) -> dict:
    """Record validation figures in an existing manifest (the manifest is not itself hashed)."""
    manifest = read_manifest(directory)
    if manifest is None:
        raise ModelLoadError(f"{directory} has no {MANIFEST}")
    manifest["validation"] = validation
    (Path(directory) / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def read_manifest(directory: Path) -> dict | None:
    """The manifest, or None for a plain model directory; a broken manifest is an error."""
    path = Path(directory) / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelLoadError(f"{path} is not valid JSON ({exc}); the artifact is damaged, export it again") from None
    for key in ("format", "backend", "precision", "components", "files"):
        if key not in manifest:
            raise ModelLoadError(f"{path} lacks {key!r}; the artifact is damaged or from another tool")
    if manifest["format"] != FORMAT:
        raise ModelLoadError(f"{path}: format {manifest['format']!r} is not {FORMAT!r}; this guardedge cannot load it")
    return manifest


def verify_files(directory: Path, manifest: dict, show_progress: bool = False) -> None:
    """Raise ModelLoadError naming the first file that is missing, unexpected or changed."""
    directory = Path(directory)
    expected: dict[str, str] = manifest["files"]
    present = {f.as_posix() for f in artifact_files(directory)}
    missing = sorted(set(expected) - present)
    if missing:
        raise ModelLoadError(f"artifact {directory}: file {missing[0]!r} is listed in {MANIFEST} but missing")
    extra = sorted(present - set(expected))
    if extra:
        raise ModelLoadError(f"artifact {directory}: file {extra[0]!r} is not in {MANIFEST}; the artifact was modified")
    actual = hash_files(directory, [Path(rel) for rel in sorted(expected)], show_progress)
    for rel in sorted(expected):
        if actual[rel] != expected[rel]:
            raise ModelLoadError(
                f"artifact {directory}: file {rel!r} does not match its sha256 in {MANIFEST} "
                f"(expected {expected[rel][:16]}…, found {actual[rel][:16]}…); the artifact is corrupted or was modified"
            )

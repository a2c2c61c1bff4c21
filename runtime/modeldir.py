"""Find and check a local model directory; never reach a model hub.

Aliases such as ``demo`` (built on first use) are resolved in runtime/models.py. A model must be a local
directory with config.json and safetensors weights: pickle checkpoints (``*.bin``, ``*.pt``,
``*.pth``, ``*.ckpt``) are refused because loading them can run arbitrary code.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from guardedge.runtime.errors import ModelLoadError

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


@dataclass(frozen=True)
class ModelDir:
    path: Path
    config: dict
    name: str
    manifest: dict | None = None  # set for a guardedge export (runtime/artifact.py), checked on load

    @property
    def backend(self) -> str:
        """Which backend runs it: the manifest says; a plain model directory is PyTorch."""
        return self.manifest["backend"] if self.manifest else "torch"


def offline() -> None:
    """Make every Hugging Face library call fail instead of touching the network."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


def check(path: Path, name: str, progress: bool = False) -> ModelDir:
    """A usable model directory, or ModelLoadError saying what is wrong.

    An artifact (with manifest.json) must match its manifest file by file; its weights may be
    ONNX rather than safetensors, as its components say.
    """
    if not path.is_dir():
        raise ModelLoadError(f"model directory {str(path)!r} does not exist (guardedge loads local directories only)")
    from guardedge.runtime.artifact import read_manifest, verify_files

    manifest = read_manifest(path)
    if manifest is not None:  # integrity first: nothing of a modified artifact is read
        verify_files(path, manifest, show_progress=progress)
    config_file = path / "config.json"
    if not config_file.is_file():
        raise ModelLoadError(f"{path} has no config.json; is it a transformers model directory?")
    try:
        config = json.loads(config_file.read_text())
    except json.JSONDecodeError as exc:
        raise ModelLoadError(f"{config_file} is not valid JSON ({exc})") from None
    if manifest is not None:
        return ModelDir(path, config, name, manifest)
    weights = sorted(path.glob("*.safetensors"))
    pickles = sorted(p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if not weights:
        if pickles:
            raise ModelLoadError(
                f"{path} has only pickle weights ({', '.join(pickles[:3])}); guardedge loads safetensors only "
                "because unpickling can run code. Convert them with transformers' save_pretrained(safe_serialization=True)."
            )
        raise ModelLoadError(f"{path} has no *.safetensors weights")
    return ModelDir(path, config, name)

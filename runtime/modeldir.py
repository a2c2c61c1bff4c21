"""Find and check a local model directory; never reach a model hub.

``demo`` names the bundled demo guard (built on first use). Anything else must be a local
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


def offline() -> None:
    """Make every Hugging Face library call fail instead of touching the network."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


def resolve(model: str, progress: bool = True) -> ModelDir:
    offline()
    if model == "demo":
        from guardedge.runtime.demo.build import ensure_demo

        path, name = ensure_demo(progress=progress), "demo"
    else:
        path = Path(model).expanduser()
        name = path.name
    return check(path, name)


def check(path: Path, name: str) -> ModelDir:
    if not path.is_dir():
        raise ModelLoadError(f"model directory {str(path)!r} does not exist (guardedge loads local directories only)")
    config_file = path / "config.json"
    if not config_file.is_file():
        raise ModelLoadError(f"{path} has no config.json; is it a transformers model directory?")
    try:
        config = json.loads(config_file.read_text())
    except json.JSONDecodeError as exc:
        raise ModelLoadError(f"{config_file} is not valid JSON ({exc})") from None
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

"""Steps every exporter shares: progress on stderr, freeing a model, refusing to overwrite."""

from __future__ import annotations

import gc
import logging
import sys
from pathlib import Path

from guardedge.runtime.errors import GuardError

log = logging.getLogger("guardedge.export")  # the exporters' loggers are its children


def progress_logging() -> None:
    """Show the exporters' INFO progress lines on stderr, bare (the CLI's default)."""
    if log.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False


def free() -> None:
    """Return a dropped model's memory now (host, and the CUDA cache when there is one)."""
    gc.collect()
    try:
        import torch
    except ImportError:
        return
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def check_out(out: Path, force: bool) -> None:
    if out.exists() and any(out.iterdir()) and not force:
        raise GuardError(f"{out} exists and is not empty; choose another --out or pass --force")

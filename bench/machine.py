"""What machine and library versions a benchmark ran on: every bench report carries both, since
an absolute time means nothing without them."""

from __future__ import annotations

import platform


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for package in ("torch", "transformers", "onnxruntime", "grpcio"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            out[package] = None
    return out


def machine() -> str:
    import os

    return f"{platform.machine()} {platform.processor() or platform.system()} {os.cpu_count()} cpus".strip()

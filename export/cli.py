"""``guardedge export ...``: registered into the ``guardedge`` command through the entry point
``guardedge.commands`` (pyproject.toml), so the runtime's CLI never imports this package.
Each subcommand's module exposes ``configure_parser`` and ``main`` (runtime/cli.py ``add_lazy_commands``).
"""

from __future__ import annotations

from guardedge.runtime.cli import add_lazy_commands

SUBCOMMANDS = {
    "quantize": ("guardedge.export.quantize", "bitsandbytes 8-bit or 4-bit model directory"),
    "onnx": ("guardedge.export.onnx_export", "ONNX vision + text components for ONNX Runtime (fp32/fp16, int8/int4)"),
    "verify": ("guardedge.export.verify", "re-check an artifact's file hashes and run a parity smoke"),
    "sensitivity": ("guardedge.export.sensitivity", "how far quantizing each module group alone moves P(unsafe), on your data"),
}


def register(subparsers) -> None:
    add_lazy_commands(subparsers, "export", "quantize or convert a model into a servable artifact", SUBCOMMANDS)

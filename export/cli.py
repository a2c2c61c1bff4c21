"""``guardedge export ...``: registered into the ``guardedge`` command through the entry point
``guardedge.commands`` (pyproject.toml), so the runtime's CLI never imports this package.

Each subcommand lives in its own module exposing ``configure_parser(parser)`` and
``main(args) -> int`` (exit status), imported only when that subcommand runs.
"""

from __future__ import annotations

import argparse
import importlib

SUBCOMMANDS = {
    "quantize": ("guardedge.export.quantize", "bitsandbytes 8-bit or 4-bit model directory"),
    "onnx": ("guardedge.export.onnx_export", "ONNX vision + text components for ONNX Runtime (fp32/fp16, int8/int4)"),
    "verify": ("guardedge.export.verify", "re-check an artifact's file hashes and run a parity smoke"),
}


def register(subparsers) -> None:
    export = subparsers.add_parser("export", help="quantize or convert a model into a servable artifact")
    sub = export.add_subparsers(dest="export_command", required=True)
    for name, (module, text) in SUBCOMMANDS.items():
        parser = sub.add_parser(name, help=text, description=text)
        _configure(parser, module)


def _configure(parser: argparse.ArgumentParser, module_name: str) -> None:
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:  # a missing optional extra must not break the other commands
        parser.set_defaults(func=lambda args, exc=exc: _missing(exc))
        return
    module.configure_parser(parser)
    parser.set_defaults(func=module.main)


def _missing(exc: ImportError) -> int:
    print(f"guardedge export: this command needs a package that is not installed ({exc}); "
          "install the extras: pip install 'guardedge[cpu,bnb]' (or [gpu])")
    return 1

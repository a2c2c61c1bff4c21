"""``guardedge bench ...``: registered into the ``guardedge`` command through the entry point
``guardedge.commands`` (pyproject.toml), so the runtime's CLI never imports this package.

Each subcommand lives in its own module exposing ``configure_parser(parser)`` and
``main(args) -> int`` (exit status); heavy imports stay inside functions so that building the
``guardedge`` parser stays cheap.
"""

from __future__ import annotations

import argparse
import importlib

SUBCOMMANDS = {
    "drift": ("guardedge.bench.drift", "accuracy drift of candidates against a baseline model, with a CI gate"),
    "latency": ("guardedge.bench.latency", "latency percentiles and throughput per concurrency level"),
    "reference": ("guardedge.bench.reference", "the model card's transformers snippet vs the engine, same inputs"),
    "memory": ("guardedge.bench.memory", "peak host and GPU memory to load and classify, per variant"),
}


def register(subparsers) -> None:
    bench = subparsers.add_parser("bench", help="measure accuracy drift, latency, throughput and memory")
    sub = bench.add_subparsers(dest="bench_command", required=True)
    for name, (module, text) in SUBCOMMANDS.items():
        parser = sub.add_parser(name, help=text, description=text)
        _configure(parser, module)


def _configure(parser: argparse.ArgumentParser, module_name: str) -> None:
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        parser.set_defaults(func=lambda args, exc=exc: _missing(exc))
        return
    module.configure_parser(parser)
    parser.set_defaults(func=module.main)


def _missing(exc: ImportError) -> int:
    print(f"guardedge bench: this command cannot run here ({exc})")
    return 1

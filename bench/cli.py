"""``guardedge bench ...``: registered into the ``guardedge`` command through the entry point
``guardedge.commands`` (pyproject.toml), so the runtime's CLI never imports this package.
Each subcommand's module exposes ``configure_parser`` and ``main`` (runtime/cli.py ``add_lazy_commands``).
"""

from __future__ import annotations

from guardedge.runtime.cli import add_lazy_commands

SUBCOMMANDS = {
    "drift": ("guardedge.bench.drift", "accuracy drift of candidates against a baseline model, with a CI gate"),
    "latency": ("guardedge.bench.latency", "latency percentiles and throughput per concurrency level"),
    "reference": ("guardedge.bench.reference", "the model card's transformers snippet vs the engine, same inputs"),
    "memory": ("guardedge.bench.memory", "peak host and GPU memory to load and classify, per variant"),
    "preprocess": ("guardedge.bench.preprocess", "image preprocessing: the fast exact path against transformers' processor"),
    "stages": ("guardedge.bench.stages", "time per stage of one image request: gRPC transfer, parse, preprocess, vision, prefill, decode"),
    "gpu-check": ("guardedge.bench.gpu_check", "what a CUDA machine must measure, in one run under 8 minutes (make gpu-check)"),
    "annotate": ("guardedge.bench.annotate", "guardedge annotate's items/s against the engine's own batched throughput, same images"),
    "hostile": ("guardedge.bench.hostile", "what the service's limits cost: long prompts, budget batches, hostile-input refusals"),
}


def register(subparsers) -> None:
    add_lazy_commands(subparsers, "bench", "measure accuracy drift, latency, throughput and memory", SUBCOMMANDS)

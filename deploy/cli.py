"""``guardedge bundle ...``: registered through the ``guardedge.commands`` entry point (pyproject.toml).

    guardedge bundle create --out DIR --model demo [--target cpu|cuda] [--tar]
    guardedge bundle verify DIR
"""

from __future__ import annotations

from guardedge.runtime.cli import add_lazy_commands

SUBCOMMANDS = {
    "create": ("guardedge.deploy.bundle", "build an offline bundle: wheels for the target, models, container context, install script"),
    "verify": ("guardedge.deploy.verify", "check a bundle against its SHA256SUMS and its models against their manifests"),
}


def register(subparsers) -> None:
    add_lazy_commands(subparsers, "bundle", "offline bundles for air-gapped sites (docs/airgap.md)", SUBCOMMANDS)

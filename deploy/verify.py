"""``guardedge bundle verify DIR``: is this bundle exactly what was built?

Every file against SHA256SUMS (a missing, modified or extra file is named, each on its line), then
each model under models/ against its own manifest.json. Exit 0 when intact, 1 otherwise. Needs no
network and nothing but the Python standard library and guardedge's runtime.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from guardedge.deploy import sums


def problems(root: Path) -> list[str]:
    """Everything wrong with the bundle at ``root``, one line each."""
    found = sums.check(root)
    if found:
        return found
    for model in sorted(p for p in (root / "models").glob("*") if p.is_dir()):
        found += [f"model {model.name}: {line}" for line in model_problems(model)]
    return found


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bundle", type=Path, help="a bundle directory, or one model directory with manifest.json")


def model_problems(model: Path) -> list[str]:
    """A single model directory against its manifest.json (what install.sh runs after copying one)."""
    from guardedge.runtime.artifact import read_manifest, verify_files
    from guardedge.runtime.errors import ModelLoadError

    try:
        manifest = read_manifest(model)
        if manifest is None:
            return [f"{model} has neither SHA256SUMS nor manifest.json"]
        verify_files(model, manifest)
    except ModelLoadError as exc:
        return [str(exc)]
    return []


def main(args: argparse.Namespace) -> int:
    if not (args.bundle / sums.SUMS).exists() and (args.bundle / "manifest.json").exists():
        found = model_problems(args.bundle)
        for line in found:
            print(f"{args.bundle}: {line}", file=sys.stderr)
        if not found:
            print(f"{args.bundle}: ok (every file matches manifest.json)")
        return 1 if found else 0
    found = problems(args.bundle)
    for line in found:
        print(f"{args.bundle}: {line}", file=sys.stderr)
    if found:
        return 1
    print(f"{args.bundle}: ok ({len(sums.read(args.bundle))} files match SHA256SUMS; models match their manifests)")
    return 0

"""The container image, built from a bundle directory and saved into it (``bundle create --image``).

    podman build --pull=never --isolation=chroot --format docker -f container/Containerfile -t TAG BUNDLE
    podman save -o BUNDLE/image/guardedge-VERSION-TARGET.tar TAG

``--pull=never``: the base image must already be local (the site's registry mirror, or a base made
from Debian packages with mmdebstrap + ``podman import``, docs/airgap.md), and nothing else is
fetched: pip installs from the bundle's wheels with ``--no-index``.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path


class ImageError(RuntimeError):
    """podman is missing, or the build or save failed."""


def build_and_save(bundle: Path, tag: str, base: str, bake_models: bool = False, extras: str = "") -> Path:
    """Build the image from ``bundle`` and write ``bundle/image/<tag>.tar``; returns the tarball's path."""
    if shutil.which("podman") is None:
        raise ImageError("podman is not installed (Debian: apt-get install podman); or build the image at the site, docs/airgap.md")
    args = ["podman", "build", "--pull=never", "--isolation=chroot", "--format", "docker",
            "--build-arg", f"BASE_IMAGE={base}", "--build-arg", f"EXTRAS={extras}",
            "-f", str(bundle / "container" / "Containerfile"), "-t", tag]
    if bake_models:
        args += ["--build-arg", "MODELS_DIR=models"]
    _run([*args, str(bundle)])
    out = bundle / "image" / (tag.rsplit("/", 1)[-1].replace(":", "-") + ".tar")
    out.parent.mkdir(exist_ok=True)
    _run(["podman", "save", "--format", "docker-archive", "-o", str(out), tag])
    return out


def _run(command: list[str]) -> None:
    done = subprocess.run(command, stdout=sys.stderr, stderr=sys.stderr)
    if done.returncode != 0:
        raise ImageError(f"{' '.join(command[:2])} failed (exit {done.returncode})")

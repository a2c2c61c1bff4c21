"""What the explicitly-run checks (``make image-check``, ``bundle-check``, ``realshape-check``,
``slow-check``) need, and how they say so.

Inside ``make test`` these checks skip with their reason: they take minutes or need root and
Debian tools. A check someone runs by name must not read as a pass when it could not run, so the
Makefile targets set ``GUARDEDGE_EXPLICIT_CHECK=<target>`` and conftest.py fails the session when
any test skipped or none ran (each skip names what is missing and the command that installs it).

    from checks import require_env, require_tools
    require_env("GUARDEDGE_DEPLOY_CHECKS", "image-check", "builds a base image and a container image (minutes)")
    require_tools("image-check", ("podman", "mmdebstrap", "unshare", "chroot", "ip"), root=True)
"""

from __future__ import annotations

import os
import shutil

import pytest

# The Debian package that brings each tool (the machines this project runs on are Debian).
PACKAGES = {
    "podman": "podman", "mmdebstrap": "mmdebstrap", "buildah": "buildah", "unshare": "util-linux",
    "chroot": "coreutils", "sha256sum": "coreutils", "ip": "iproute2", "make": "make",
}


def require_env(variable: str, target: str, why: str) -> None:
    """Skip unless ``variable`` is 1: the check is slow, and ``make <target>`` sets it."""
    if os.environ.get(variable) != "1":
        pytest.skip(f"{why}: run it with make {target}")


def missing_tools(tools: tuple[str, ...]) -> list[str]:
    return [t for t in tools if shutil.which(t) is None]


def install_hint(tools: list[str]) -> str:
    packages = sorted({PACKAGES.get(t, t) for t in tools})
    return f"apt-get install -y {' '.join(packages)}"


def require_tools(target: str, tools: tuple[str, ...], root: bool = False) -> None:
    """Skip, saying what is missing and how to install it, unless every tool is on PATH (and we are root)."""
    problems = []
    if root and os.geteuid() != 0:
        problems.append("root (it mounts and makes network namespaces)")
    missing = missing_tools(tools)
    if missing:
        problems.append(f"{', '.join(missing)} (install: {install_hint(missing)})")
    if problems:
        pytest.skip(f"make {target} cannot run here: needs {'; '.join(problems)}")

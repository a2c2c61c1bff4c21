"""The wheelhouse: guardedge's wheel and every dependency as wheels for the target machine.

Wheels are resolved for the target, not for the machine building the bundle: ``pip download``
with ``--only-binary=:all: --python-version --implementation cp --abi --platform``. A CPU target
pins PyTorch's CPU build (``torch==X+cpu``, from PyTorch's CPU index) and is refused if any CUDA
wheel (``nvidia-*``) slipped in; a CUDA target takes the default index's torch (on Linux the CUDA
build with its nvidia-* runtime wheels) or ``--torch-index``'s.
"""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

CPU_INDEX = "https://download.pytorch.org/whl/cpu"


class WheelhouseError(RuntimeError):
    """pip could not resolve or fetch the target's wheels, or the result does not fit the target."""


@dataclass(frozen=True)
class Target:
    kind: Literal["cpu", "cuda"] = "cpu"
    python: str = f"{sys.version_info.major}.{sys.version_info.minor}"  # e.g. "3.11"
    platforms: tuple[str, ...] = ("manylinux_2_28_x86_64",)  # glibc >= 2.28 (RHEL 8, Debian 10, Ubuntu 20.04)
    extras: tuple[str, ...] = ()  # guardedge extras: cpu, gpu, bnb
    torch: str = "2.13.0"
    torch_index: str | None = None  # None: PyTorch's CPU index (cpu), the default index (cuda)

    @property
    def abi(self) -> str:
        return "cp" + self.python.replace(".", "")

    @property
    def torch_requirement(self) -> str:
        return f"torch=={self.torch}+cpu" if self.kind == "cpu" else f"torch=={self.torch}"


def expand_platforms(platforms: tuple[str, ...]) -> list[str]:
    """Each ``manylinux_2_N_ARCH`` plus every older manylinux tag a glibc-2.N machine accepts.

    pip does not expand PEP 600 tags given with ``--platform`` (it does for manylinux2014), so a
    wheel tagged manylinux_2_17 would otherwise not match a manylinux_2_28 target."""
    out: list[str] = []
    for platform in platforms:
        found = re.fullmatch(r"manylinux_2_(\d+)_(\w+)", platform)
        if not found:
            out.append(platform)
            continue
        minor, arch = int(found[1]), found[2]
        out += [f"manylinux_2_{m}_{arch}" for m in range(minor, 4, -1)]
        legacy = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}
        out += [f"{name}_{arch}" for glibc, name in legacy.items() if glibc <= minor]
    return list(dict.fromkeys(out))


def reachable(url: str, timeout: float = 10.0) -> bool:
    """Whether an index answers at all (pip would otherwise retry it for every package)."""
    import urllib.request

    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout):
            return True
    except Exception:  # noqa: BLE001 - DNS, TLS, HTTP errors: all mean "do not use it"
        return False


def build_project_wheel(source: Path, out: Path) -> Path:
    """``pip wheel --no-deps`` of the source tree; returns the wheel's path."""
    import importlib.util

    before = set(out.glob("guardedge-*.whl"))
    # With setuptools here, build without fetching it again (pip's isolated build would download it).
    isolation = ["--no-build-isolation"] if importlib.util.find_spec("setuptools") else []
    _pip(["wheel", "--no-deps", *isolation, "-w", str(out), str(source)])
    made = sorted(set(out.glob("guardedge-*.whl")) - before) or sorted(out.glob("guardedge-*.whl"))
    if not made:
        raise WheelhouseError(f"pip wheel made no guardedge wheel from {source}")
    return made[-1]


def download(project_wheel: Path, out: Path, target: Target) -> list[Path]:
    """Download every dependency of ``project_wheel`` (with ``target.extras``) for the target into ``out``."""
    extras = f"[{','.join(target.extras)}]" if target.extras else ""
    args = ["download", "--dest", str(out), "--only-binary=:all:", "--python-version", target.python,
            "--implementation", "cp", "--abi", target.abi, "--find-links", str(out), "--progress-bar", "on"]
    for platform in expand_platforms(target.platforms):
        args += ["--platform", platform]
    index = target.torch_index or (CPU_INDEX if target.kind == "cpu" else None)
    if index and reachable(index):
        args += ["--extra-index-url", index]
    elif index:
        print(f"[bundle] {index} does not answer from here; {target.torch_requirement} must come from pip's other sources",
              file=sys.stderr, flush=True)
    version = project_wheel.name.split("-")[1]
    _pip([*args, f"guardedge{extras}=={version}", target.torch_requirement])
    wheels = sorted(out.glob("*.whl"))
    check(wheels, target)
    return wheels


def check(wheels: list[Path], target: Target) -> None:
    """Refuse a wheelhouse that does not fit the target (CUDA wheels in a CPU bundle, no torch)."""
    names = [w.name for w in wheels]
    torch = [n for n in names if n.startswith("torch-")]
    if not torch:
        raise WheelhouseError("the wheelhouse has no torch wheel")
    cuda = [n for n in names if n.startswith("nvidia_")]
    if target.kind == "cpu" and (cuda or "+cpu" not in torch[0]):
        raise WheelhouseError(f"a CPU bundle got CUDA wheels ({', '.join((cuda or torch)[:3])}); "
                              f"is {CPU_INDEX} (or --torch-index) reachable from this machine?")
    if target.kind == "cuda" and "+cpu" in torch[0]:
        raise WheelhouseError(f"a CUDA bundle got the CPU torch ({torch[0]}); give --torch-index for your CUDA version")


def _pip(args: list[str]) -> None:
    """Run pip in this interpreter, its progress on our stderr; raise WheelhouseError on failure."""
    command = [sys.executable, "-m", "pip", *args]
    done = subprocess.run(command, stdout=sys.stderr, stderr=sys.stderr)
    if done.returncode != 0:
        raise WheelhouseError(f"pip {args[0]} failed (exit {done.returncode}): {' '.join(command[3:])}")

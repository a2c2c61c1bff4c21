"""How many threads the model may use: the container's CPU quota, not the host's core count.

torch (and MKL/OpenMP under it) start one thread per host core. In a container limited to two
CPUs on a 64-core host that oversubscribes the quota and the kernel throttles the process; on a
shared machine it collapsed latency (p50 213 ms vs 16 ms with one thread, issue 14). The default
here is the CPU quota (cgroup v2 ``cpu.max``, v1 ``cpu.cfs_quota_us``/``cpu.cfs_period_us``)
rounded up, capped by the CPUs this process may run on.

    guardedge serve --threads 4          # or GUARDEDGE_THREADS=4, or threads = 4 in the TOML file
    python -m guardedge.runtime.threads  # prints what the default would be here, and why
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

CGROUP = Path("/sys/fs/cgroup")


def cpu_quota(root: Path = CGROUP) -> float | None:
    """CPUs the cgroup may use (e.g. 1.5), or None when it is not limited or cannot be read."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]  # cgroup v2: "max 100000" or "150000 100000"
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    for v1 in (root / "cpu", root / "cpu,cpuacct", root):
        try:
            v1_quota = int((v1 / "cpu.cfs_quota_us").read_text())
            v1_period = int((v1 / "cpu.cfs_period_us").read_text())
        except (OSError, ValueError):
            continue
        return None if v1_quota <= 0 or v1_period <= 0 else v1_quota / v1_period
    return None


def available_cpus() -> int:
    """CPUs this process may be scheduled on (its affinity mask), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def default_threads(root: Path = CGROUP) -> int:
    """The CPU quota rounded up, at most the CPUs available; the CPUs available without a quota."""
    quota = cpu_quota(root)
    cpus = available_cpus()
    return cpus if quota is None else max(1, min(cpus, math.ceil(quota)))


def resolve(threads: int | None) -> int:
    """``threads`` if positive; else ``GUARDEDGE_THREADS``, else ``OMP_NUM_THREADS`` if set; else
    :func:`default_threads`."""
    if threads and threads > 0:
        return threads
    for name in ("GUARDEDGE_THREADS", "OMP_NUM_THREADS"):
        value = os.environ.get(name, "")
        if value.isdigit() and int(value) > 0:
            return int(value)
    return default_threads()


_applied: int | None = None


def apply(threads: int | None) -> int:
    """Set the thread count for torch, OpenMP/MKL and ONNX Runtime sessions made afterwards; returns it.

    Call it before a model loads. Before torch is imported, OMP_NUM_THREADS/MKL_NUM_THREADS are set
    so its thread pools start at that size; torch is then told directly either way."""
    global _applied
    import sys

    n = resolve(threads)
    if problem := oversubscribed(n):
        logging.getLogger("guardedge.threads").warning(problem)
    if "torch" not in sys.modules:
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(n)
    import torch

    torch.set_num_threads(n)
    _applied = n
    return n


def oversubscribed(n: int) -> str:
    """Why ``n`` threads are too many here ("" when they are not): more than the CPU quota allows."""
    limit = default_threads()
    if n <= limit:
        return ""
    return (f"threads={n} is above the {limit} CPUs this process may use (its CPU quota and affinity): the threads "
            f"wait for each other and every request gets slower; use at most {limit} (or 0 to follow the quota)")


def configured() -> int | None:
    """The thread count :func:`apply` set in this process (the ONNX backend sizes its sessions by it)."""
    return _applied


if __name__ == "__main__":
    print(f"cpu quota: {cpu_quota()}  cpus available: {available_cpus()}  default threads: {default_threads()}")

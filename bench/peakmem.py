"""Peak resident memory a call adds, for the hostile-input benches (bench/hostile.py and
bench/hostile_engine.py): sampled every 2 ms, and read from the kernel's high-water mark where
Linux lets a process reset it (no short spike is missed then)."""

from __future__ import annotations

import threading
import time

import psutil


def peak_extra_mb(fn) -> tuple[float, float]:
    """(peak RSS above the starting level in MB, seconds) while ``fn`` runs."""
    proc, peak, done = psutil.Process(), [0], threading.Event()
    exact = _reset_peak()
    base = proc.memory_info().rss

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            time.sleep(0.002)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    started = time.perf_counter()
    fn()
    seconds = time.perf_counter() - started
    done.set()
    thread.join()
    if exact:  # the kernel's high-water mark misses no short spike, unlike sampling
        peak[0] = max(peak[0], _kernel_peak())
    return max(0, peak[0] - base) / 2**20, seconds


def _reset_peak() -> bool:
    """Reset this process's VmHWM (Linux: writing 5 to clear_refs); False where not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _kernel_peak() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0

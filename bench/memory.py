"""``guardedge bench memory``: peak host and GPU memory to load a model and to classify with it.

Each variant runs in a fresh subprocess, so one variant's peak never hides in another's. In it:
- **baseline**: peak RSS after importing torch, transformers and guardedge (before any model);
- **load**: peak RSS (``resource.getrusage`` ru_maxrss, Linux) and, on CUDA, peak
  ``torch.cuda.max_memory_allocated`` once ``load_engine`` returns;
- **classify**: the same peaks after classifying a small batch (Llama Guard: text-only and
  text + image; LlavaGuard: two of its sample images);
- ``engine.info().memory_bytes``: the model's parameters and buffers.
Peaks are cumulative (load is included in classify's peak). Table first, one JSON line last.

    guardedge bench memory --model demo --model ./exports/int8 [--device cuda] [--plot memory.png]
    guardedge bench memory --model fullsize-random --device cuda   # the 11B with random weights
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

MB = 1024 * 1024


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", action="append", required=True,
                        help="model directory, 'demo' or 'fullsize-random[-tiny]'; repeat for several variants")
    parser.add_argument("--device", help="cpu, cuda, cuda:N (default: auto)")
    parser.add_argument("--dtype", help="float32, bfloat16, float16 (default: auto)")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per variant (default 1800)")
    parser.add_argument("--plot", help="write a PNG of the peaks per variant here (needs matplotlib)")


def _peak_rss() -> int:
    """This process's peak resident set in bytes (ru_maxrss is in KiB on Linux)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _batch(family) -> list[dict]:
    """Two requests the family accepts: Llama Guard a text and a text + image request; a family
    that rates images alone (LlavaGuard) two of its sample images (one image per request, no text)."""
    from guardedge.runtime.demo.samples import png_base64

    if family.requires_image:
        return [{k: v for k, v in r.items() if k != "rationale"} for r in family.smoke_requests()[:2]]
    text = {"request_id": "text", "messages": [{"role": "user", "content": "How do I bake sourdough bread?"}]}
    image = {"request_id": "image", "messages": [{"role": "user", "content": [
        {"type": "image", "data": png_base64((200, 30, 30), (96, 64))}, {"type": "text", "text": "What is in this image?"}]}]}
    return [text, image]


def child(model: str, device: str | None, dtype: str | None) -> dict:
    """Measured inside the fresh subprocess."""
    import torch

    from guardedge.bench.fullsize import open_engine
    from guardedge.runtime.engine import EngineOptions

    cuda = torch.cuda.is_available() and (device is None or device.startswith("cuda"))
    baseline = _peak_rss()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    engine = open_engine(model, EngineOptions(device=device, dtype=dtype, progress=False))
    load = {"peak_rss_bytes": _peak_rss(), "peak_gpu_bytes": torch.cuda.max_memory_allocated() if cuda else None}
    verdicts = engine.classify([engine.parse(r) for r in _batch(engine.family)])
    classify = {"peak_rss_bytes": _peak_rss(), "peak_gpu_bytes": torch.cuda.max_memory_allocated() if cuda else None}
    info = engine.info()
    return {"model": model, "variant": info.variant, "memory_bytes": info.memory_bytes, "baseline_rss_bytes": baseline,
            "load": load, "classify": classify, "batch": len(verdicts)}


def measure(model: str, device: str | None, dtype: str | None, timeout: float) -> dict:
    command = [sys.executable, "-m", "guardedge.bench.memory", "--child", model]
    command += ["--device", device] if device else []
    command += ["--dtype", dtype] if dtype else []
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    lines = result.stdout.strip().splitlines()
    if result.returncode != 0 or not lines:
        return {"model": model, "error": (result.stderr.strip().splitlines() or ["exit status %d" % result.returncode])[-1]}
    return json.loads(lines[-1])


def _mb(value: int | None) -> str:
    return f"{value / MB:10.1f}" if value is not None else f"{'-':>10}"


def main(args: argparse.Namespace) -> int:
    import platform

    from guardedge.bench.machine import machine, versions

    rows = [measure(m, args.device, args.dtype, args.timeout) for m in args.model]
    report = {"machine": machine(), "python": platform.python_version(), "versions": versions(), "variants": rows}
    print(f"{report['machine']}; " + ", ".join(f"{k} {v}" for k, v in report["versions"].items()))
    print(f"{'model':28}{'variant':22}{'params MB':>10}{'base RSS':>10}{'load RSS':>10}{'cls RSS':>10}{'load GPU':>10}{'cls GPU':>10}")
    for row in rows:
        if "error" in row:
            print(f"{row['model'][-28:]:28}error: {row['error']}")
            continue
        print(f"{row['model'][-28:]:28}{row['variant']:22}{_mb(row['memory_bytes'])}{_mb(row['baseline_rss_bytes'])}"
              f"{_mb(row['load']['peak_rss_bytes'])}{_mb(row['classify']['peak_rss_bytes'])}"
              f"{_mb(row['load']['peak_gpu_bytes'])}{_mb(row['classify']['peak_gpu_bytes'])}")
    print("(MB = MiB; RSS peaks are cumulative: classify includes load)")
    if args.plot:
        from guardedge.bench import plots

        plots.memory(report, args.plot)
        print(f"plot: {args.plot}")
    print(json.dumps(report))
    return 1 if any("error" in row for row in rows) else 0


def _child_main() -> None:
    parser = argparse.ArgumentParser(description="one variant of guardedge bench memory (run in a fresh process)")
    parser.add_argument("--child", required=True)
    parser.add_argument("--device")
    parser.add_argument("--dtype")
    args = parser.parse_args()
    print(json.dumps(child(args.child, args.device, args.dtype)))


if __name__ == "__main__":
    _child_main()

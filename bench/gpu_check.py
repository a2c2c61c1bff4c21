"""``guardedge bench gpu-check`` (``make gpu-check``): what a CUDA machine must measure, in minutes.

GPU time is scarce, so one command measures everything guardedge needs from a GPU within a wall
budget (default 420 s, at most 480), machine start excluded. Sections, in order, each with a time
cap scaled to the budget (``plan``):

- ``env``: GPU, torch/transformers versions, which optional packages are there;
- ``demo``: each backend's CUDA path on the demo guard (torch bf16, bitsandbytes 8/4-bit, ONNX
  Runtime's CUDA EP) against CPU fp32 on the demo samples: verdict agreement, max |ΔP(unsafe)|;
- ``fullsize``: the 11B Llama Guard 3 Vision with random weights (bench/fullsize.py), built on the
  GPU in bf16: p50/p95 and throughput at concurrency 1/4/16 for a 4-tile image on the safe and
  the unsafe path, peak memory, and the per-stage breakdown (bench/stages.py);
- ``switches``: each fast path (runtime/backends/fastpaths.py) off and on, side by side;
- ``preprocess``: image tiling on the GPU (runtime/pixels.py, when this tree has it) vs the CPU.

A missing package skips its part with a line in the report; an exception fails its section only.
After each section ``OUT/gpu_check.md`` (a section for bench/RESULTS.md) and ``OUT/gpu_check.json``
are rewritten; a watchdog ends the run 30 s past the budget, leaving what was written. Without
CUDA it checks its arguments, writes ``gpu_check.json`` with ``"measured": false`` and exits 0 (it is
meant to run anywhere), its last line saying plainly that nothing was measured: exit 0 is not a pass.
With CUDA, ``measured`` is true when at least one section measured something (status ok), and the
last line counts the sections that did.

    python3 -m guardedge.bench.gpu_check --out "$OUT" [--budget 420] [--sections env,demo,fullsize]
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path

SECTIONS = ("env", "demo", "fullsize", "switches", "preprocess")
# Share of the budget per section (seconds at the default 420 s budget); the 11B build is in fullsize.
WEIGHTS = {"env": 10, "demo": 90, "fullsize": 170, "switches": 120, "preprocess": 30}
NEEDS_ENGINE = {"switches", "preprocess"}  # they run on the 11B model fullsize builds
MAX_BUDGET_S = 480  # issue 13: under 8 minutes of wall time
MIN_BUDGET_S = 60
GRACE_S = 30


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="directory for gpu_check.md and gpu_check.json")
    parser.add_argument("--budget", type=_budget, default=420, help=f"wall seconds in all ({MIN_BUDGET_S}-{MAX_BUDGET_S}, default 420)")
    parser.add_argument("--sections", type=_sections, default=list(SECTIONS), help=f"comma-separated subset of {','.join(SECTIONS)}")


def _budget(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--budget takes seconds; got {text!r}") from None
    if not MIN_BUDGET_S <= value <= MAX_BUDGET_S:
        raise argparse.ArgumentTypeError(f"--budget must be between {MIN_BUDGET_S} and {MAX_BUDGET_S} s; got {text!r}")
    return value


def _sections(text: str) -> list[str]:
    names = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [n for n in names if n not in SECTIONS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"--sections takes a subset of {','.join(SECTIONS)}; got {text!r}")
    return [s for s in SECTIONS if s in names]  # always in the designed order


def plan(budget_s: float, sections: list[str]) -> list[tuple[str, float]]:
    """Each chosen section with its cap: the budget split in proportion to WEIGHTS."""
    total = sum(WEIGHTS[s] for s in sections)
    return [(s, round(budget_s * WEIGHTS[s] / total, 1)) for s in sections]


class Clock:
    """Wall time left for the run and for the current section; sections poll it between units."""

    def __init__(self, budget_s: float, now=time.monotonic):
        self.now = now
        self.end = now() + budget_s
        self.section_end = self.end

    def start_section(self, cap_s: float) -> None:
        self.section_end = min(self.end, self.now() + cap_s)

    def left(self) -> float:
        return max(0.0, self.section_end - self.now())

    def run_left(self) -> float:
        return max(0.0, self.end - self.now())


def cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def main(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        print(f"gpu-check: --out {out} is a file, not a directory", file=sys.stderr)
        return 2
    if not cuda_available():
        write_unmeasured(out, "no CUDA device")
        print(NOTHING_MEASURED.format(reason="no CUDA device"))
        return 0
    return run(out, args.budget, args.sections)


NOTHING_MEASURED = "gpu-check: {reason}: NOTHING WAS MEASURED (exit 0 so it runs anywhere; this is not a pass)"


def write_unmeasured(out: Path, reason: str) -> None:
    import json

    from guardedge.bench.gpu_report import JSON_NAME

    out.mkdir(parents=True, exist_ok=True)
    (out / JSON_NAME).write_text(json.dumps({"measured": False, "reason": reason, "sections": {}}, indent=1) + "\n")


def summary_line(sections: dict[str, dict]) -> str:
    """The run's last line: how many sections measured something, or plainly that none did."""
    ok = [name for name, result in sections.items() if result.get("status") == "ok"]
    if not ok:
        return NOTHING_MEASURED.format(reason=f"no section finished ({len(sections)} cut, skipped or failed)")
    return f"gpu-check: measured {len(ok)} of {len(sections)} sections ({', '.join(ok)})"


def run(out: Path, budget_s: float, sections: list[str]) -> int:
    from guardedge.bench import gpu_sections
    from guardedge.bench.gpu_report import Report

    started = time.monotonic()
    report = Report(out, gpu_sections.meta(budget_s, " ".join(["gpu-check", *sys.argv[1:]])))
    clock = Clock(budget_s)
    watchdog = _watchdog(report, budget_s + GRACE_S)
    context: dict = {}
    try:
        for name, cap in plan(budget_s, sections):
            report.meta["wall_s"] = round(time.monotonic() - started, 1)
            report.add(name, run_section(name, cap, clock, context, gpu_sections.SECTION_RUNNERS[name]))
            _print_status(name, report.sections[name])
    finally:
        watchdog.cancel()  # a finished run (or one called in-process, as the tests do) must not be ended later
    report.meta["wall_s"] = round(time.monotonic() - started, 1)
    report.meta["measured"] = any(r.get("status") == "ok" for r in report.sections.values())
    report.write()
    print(report.markdown())
    print(f"gpu-check: wrote {out / 'gpu_check.md'} and {out / 'gpu_check.json'}")
    print(summary_line(report.sections))
    return 0


def run_section(name: str, cap: float, clock: Clock, context: dict, runner) -> dict:
    """One section under its cap; its exception becomes its own error result."""
    if clock.run_left() < 5:
        return {"status": "cut", "reason": "the run's budget was spent before this section"}
    if name in NEEDS_ENGINE and "engine" not in context:
        return {"status": "skipped", "reason": "needs the 11B model, which the fullsize section did not build"}
    clock.start_section(cap)
    t0 = time.monotonic()
    try:
        result = runner(clock, context)
    except Exception as exc:  # noqa: BLE001 - one section's failure must not lose the others
        result = {"status": "error", "reason": f"{type(exc).__name__}: {exc}"[:500]}
    result.setdefault("status", "ok")
    result["seconds"] = round(time.monotonic() - t0, 1)
    result["cap_s"] = cap
    return result


def _print_status(name: str, result: dict) -> None:
    # A section cut or skipped before it ran has no time of its own.
    took = f" in {result['seconds']} s" if "seconds" in result else ""
    print(f"gpu-check: {name}: {result['status']}{took} {result.get('reason', '')}".rstrip(), flush=True)


def _watchdog(report, seconds: float) -> threading.Timer:
    """Ends the process past the budget: a hung compile must not eat the machine's lease. Returns
    the timer, which the run cancels when it finishes."""

    def expire():
        report.note(f"stopped by the watchdog after {seconds:.0f} s; sections not listed did not finish")
        print(f"gpu-check: over budget, stopped after {seconds:.0f} s; partial report in {report.out}", flush=True)
        os._exit(3)

    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    timer.start()
    return timer


def cli() -> int:
    parser = argparse.ArgumentParser(prog="gpu-check", description=__doc__.split("\n\n")[0])
    configure_parser(parser)
    return main(parser.parse_args())


if __name__ == "__main__":
    sys.exit(cli())

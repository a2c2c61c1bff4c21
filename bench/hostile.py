"""``guardedge bench hostile``: what the service's limits cost, for docs/service.md "What the limits cost".

    guardedge bench hostile [--model demo] [--tokens 16384,32768] [--budget 8192]

Measures, on this machine, with the engine in this process:
- extra resident memory of one long prompt run alone, per length (memory that grows with length);
- extra resident memory of the worst batches the ``max_batch_tokens`` budget admits
  (budget/2 tokens plus a short row, and max_batch_size rows sharing the budget), padded;
- the time the wire check takes to refuse the hostile messages of issue 11, and the JPEG
  scan check to refuse a scan bomb.
Memory is sampled (RSS, every 2 ms) above the level before each case. Human table first, one
JSON line last.
"""

from __future__ import annotations

import argparse
import io
import json
import threading
import time

import psutil


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="demo")
    parser.add_argument("--tokens", default="16384,32768", help="prompt lengths to run alone (comma-separated)")
    parser.add_argument("--budget", type=int, default=8192, help="max_batch_tokens to probe")
    parser.add_argument("--batch", type=int, default=8, help="max_batch_size")


def _peak_extra_mb(fn) -> tuple[float, float]:
    """(peak RSS above the starting level in MB, seconds) while ``fn`` runs."""
    proc, peak, done = psutil.Process(), [0], threading.Event()
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
    return max(0, peak[0] - base) / 2**20, seconds


def _prompt(engine, tokens: int):
    from guardedge.runtime.requests import RequestLimits

    words = max(1, tokens - 190)  # "hi " is one token; the prompt around it about 190
    request = engine.parse({"messages": [{"role": "user", "content": "hi " * words}]}, limits=RequestLimits(max_text_chars=10**8))
    return engine.prepare(request)


def _memory_cases(engine, lengths: list[int], budget: int, batch: int) -> list[dict]:
    cases = [(f"alone, {n} tokens", [n]) for n in lengths]
    # Padding is what makes masks materialise: each batch has one short row among long ones.
    cases += [(f"{budget // 2} + 1 short row", [budget // 2, 200]),
              (f"{batch - 1} x {budget // batch} + 1 short row", [budget // batch] * (batch - 1) + [200])]
    rows = []
    for name, shape in cases:
        prepared = [_prompt(engine, n) for n in shape]
        mb, seconds = _peak_extra_mb(lambda: engine.run(prepared))
        rows.append({"case": name, "tokens": [len(p.encoded.input_ids) for p in prepared], "extra_mb": round(mb, 1), "seconds": round(seconds, 2)})
    return rows


def _refusal_cases() -> list[dict]:
    from PIL import Image

    from guardedge.runtime.errors import InvalidRequest
    from guardedge.runtime.images import ImageLimits, load_image
    from guardedge.runtime.service.wire import WireLimits, classify_deserializer

    decode = classify_deserializer(WireLimits())
    payloads = {"16 M empty messages (32 MB)": b"\x1a\x00" * 16_000_000, "4 M empty messages (8 MB)": b"\x1a\x00" * 4_000_000}
    rows = []
    for name, payload in payloads.items():
        started = time.perf_counter()
        decode(payload)
        rows.append({"case": f"wire check: {name}", "seconds": round(time.perf_counter() - started, 4)})
    out = io.BytesIO()
    Image.linear_gradient("L").resize((6000, 6000)).convert("RGB").save(out, "JPEG", progressive=True, quality=20)
    data = out.getvalue()
    last = data.rindex(b"\xff\xda")
    bomb = data[:-2] + data[last:-2] * 20_000 + b"\xff\xd9"
    started = time.perf_counter()
    try:
        load_image(bomb, "image", "bytes", ImageLimits())
    except InvalidRequest:
        pass
    rows.append({"case": f"JPEG scan check: 6000x6000, 20 000 scans, {len(bomb) // 1024} KB", "seconds": round(time.perf_counter() - started, 4)})
    return rows


def main(args: argparse.Namespace) -> int:
    from guardedge.runtime.engine import EngineOptions, load_engine

    engine = load_engine(args.model, EngineOptions(max_batch_size=args.batch, progress=False))
    memory = _memory_cases(engine, [int(n) for n in args.tokens.split(",")], args.budget, args.batch)
    refusals = _refusal_cases()
    print(f"{'case':<48} {'extra MB':>9} {'seconds':>8}")
    for row in memory + refusals:
        print(f"{row['case']:<48} {row.get('extra_mb', ''):>9} {row['seconds']:>8}")
    print(json.dumps({"bench": "hostile", "model": args.model, "cpus": psutil.cpu_count(), "memory": memory, "refusals": refusals}))
    return 0

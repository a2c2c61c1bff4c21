"""``guardedge bench hostile``: what the service's limits cost, for docs/service.md "What the limits cost".

    guardedge bench hostile [--model demo] [--tokens 16384,32768,max] [--budget 8192]
    guardedge bench hostile --cases flood,invalid,two-model,aspect,mixed [--calls 200] [--rounds 10]

The cases ``memory`` and ``refusals`` (the default) are below; the server under mixed load (large-image
floods, bursts of refused calls, two models, extreme aspect ratios, mixed batches) is in
bench/hostile_load.py.

Measures, on this machine, with the engine in this process:
- extra resident memory of one long prompt run alone, per length (memory that grows with length);
  ``max`` is the longest prompt the engine accepts under the default request limits (the
  model's context minus the answer's room, within 400,000 characters), built and validated
  like any request, so the figure is the memory a maximum-length request needs;
- extra resident memory of the worst batches the ``max_batch_tokens`` budget admits
  (budget/2 tokens plus a short row, and max_batch_size rows sharing the budget), padded;
- the time the wire check takes to refuse the hostile messages of issue 11, and the JPEG
  scan check to refuse a scan bomb.
Memory: the kernel's peak RSS (VmHWM, reset before each case through /proc/self/clear_refs)
above the RSS before the case; where that reset is not allowed, RSS sampled every 2 ms. Human
table first, one JSON line last.
"""

from __future__ import annotations

import argparse
import io
import json
import time

import psutil

from guardedge.bench.peakmem import peak_extra_mb


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="demo")
    parser.add_argument("--tokens", default="16384,32768", help="prompt lengths to run alone (comma-separated; 'max': the longest accepted)")
    parser.add_argument("--budget", type=int, default=8192, help="max_batch_tokens to probe")
    parser.add_argument("--batch", type=int, default=8, help="max_batch_size")
    parser.add_argument("--cases", default="memory,refusals",
                        help="comma-separated: memory, refusals, flood, invalid, two-model, aspect, images, probes, mixed (bench/hostile_load.py)")
    parser.add_argument("--calls", type=int, default=200, help="concurrent calls of the flood and invalid cases")
    parser.add_argument("--rounds", type=int, default=10, help="rounds of the mixed case")
    parser.add_argument("--baseline-pythonpath", default="",
                        help="also run each server case against the guardedge package found on this PYTHONPATH entry (bench/hostile_load.py)")


def _prompt(engine, tokens: int):
    from guardedge.runtime.requests import RequestLimits

    words = max(1, tokens - 190)  # "hi " is one token; the prompt around it about 190
    request = engine.parse({"messages": [{"role": "user", "content": "hi " * words}]}, limits=RequestLimits(max_text_chars=10**8))
    return engine.prepare(request)


def _longest_prompt(engine):
    """The longest prompt the engine accepts under the default request limits, prepared."""
    from guardedge.runtime.errors import InvalidRequest
    from guardedge.runtime.requests import RequestLimits

    def prepare(words: int):
        return engine.prepare(engine.parse({"messages": [{"role": "user", "content": "hi " * words}]}))

    overhead = len(prepare(1).encoded.input_ids) - 1
    words = min(engine.info().max_text_tokens - overhead, RequestLimits().max_text_chars // 3)
    while words > 0:  # the tokenizer may merge a few words; step down until it is accepted
        try:
            return prepare(words)
        except InvalidRequest:
            words -= 16
    raise RuntimeError("no prompt is accepted")


def _memory_cases(engine, lengths: list[int], budget: int, batch: int) -> list[dict]:
    cases = [(f"alone, {n} tokens" if n else "alone, the longest accepted prompt", [n]) for n in lengths]
    # Padding is what makes masks materialise: each batch has one short row among long ones.
    cases += [(f"{budget // 2} + 1 short row", [budget // 2, 200]),
              (f"{batch - 1} x {budget // batch} + 1 short row", [budget // batch] * (batch - 1) + [200])]
    rows = []
    for name, shape in cases:
        prepared = [_prompt(engine, n) if n else _longest_prompt(engine) for n in shape]
        mb, seconds = peak_extra_mb(lambda: engine.run(prepared))
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
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = sorted(set(cases) - {"memory", "refusals", *LOAD_CASES})
    if unknown:
        raise SystemExit(f"guardedge bench hostile: unknown cases {unknown}; known: memory, refusals, {', '.join(LOAD_CASES)}")
    load = [c for c in cases if c in LOAD_CASES]
    if load:
        from guardedge.bench import hostile_load

        rows = hostile_load.run(load, args.calls, args.rounds, args.batch, args.baseline_pythonpath)
        print(f"(machine: {psutil.cpu_count()} CPUs, {psutil.virtual_memory().total / 2**30:.0f} GiB)")
        print(json.dumps({"bench": "hostile", "cpus": psutil.cpu_count(), "load": rows}))
    if {"memory", "refusals"} & set(cases):
        return _engine_cases(args, "memory" in cases, "refusals" in cases)
    return 0


LOAD_CASES = ("flood", "invalid", "two-model", "aspect", "images", "probes", "mixed")


def _engine_cases(args: argparse.Namespace, memory_cases: bool, refusal_cases: bool) -> int:
    from guardedge.runtime.engine import EngineOptions, load_engine

    engine = load_engine(args.model, EngineOptions(max_batch_size=args.batch, progress=False))
    engine.run([_prompt(engine, 256)])  # warm-up: one-time allocations are not counted against a case
    base_mb = psutil.Process().memory_info().rss / 2**20
    lengths = [0 if n.strip() == "max" else int(n) for n in args.tokens.split(",")]  # 0: the longest accepted
    memory = _memory_cases(engine, lengths, args.budget, args.batch) if memory_cases else []
    refusals = _refusal_cases() if refusal_cases else []
    print(f"{'case':<48} {'tokens':>14} {'extra MB':>9} {'seconds':>8}")
    for row in memory + refusals:
        tokens = "+".join(str(n) for n in row.get("tokens", []))
        print(f"{row['case']:<48} {tokens[:14]:>14} {row.get('extra_mb', ''):>9} {row['seconds']:>8}")
    print(f"(machine: {psutil.cpu_count()} CPUs, {psutil.virtual_memory().total / 2**30:.0f} GiB; model RSS before the cases: {base_mb:.0f} MB)")
    print(json.dumps({"bench": "hostile", "model": args.model, "cpus": psutil.cpu_count(), "base_rss_mb": round(base_mb),
                      "memory": memory, "refusals": refusals}))
    return 0

"""``guardedge bench latency``: latency percentiles and throughput per concurrency level.

What "concurrency c" means depends on where the model runs:
- **in-process** (``--model DIR|demo|fullsize-random[-tiny]``): the engine runs one batch at a
  time, so c means *batches of c requests* (``engine.classify`` of c requests at once, max batch
  size = the largest c). Every request of a batch waits for the whole batch, so each request's
  latency is the batch's wall time; throughput is requests / total wall time.
- **through a server** (``--server HOST:PORT``): c client threads each send one request at a
  time with ``GuardClient``; the server batches them. Latency is the client-side round trip.

``--path`` forces the verdict path through the request's ``threshold`` (so random-weight models
can be timed on both): ``safe`` sets threshold 1.0 (P(unsafe) >= 1 never holds: one prefill, no
decode), ``unsafe`` sets 0.0 (always holds: the category decode runs), ``natural`` leaves the
model's greedy answer. A first token that is neither ``safe`` nor ``unsafe`` is decoded whatever
the threshold (the engine never guesses), so the path is forced only for a model that answers in
format (the demo, the steered fullsize-random). Requests are ones the model's family accepts
(Llama Guard: the demo samples' texts; LlavaGuard: its sample images and policies, verdict-only).
``--image-size WxH`` adds (LlavaGuard: replaces) a generated image of that size to every request. Percentiles are nearest-rank; the human table comes first, then one JSON line.

    guardedge bench latency --model demo --concurrency 1,4,16 --requests 64 --path unsafe [--plot latency.png]
    guardedge bench latency --server 127.0.0.1:50051 --concurrency 1,8,32 --requests 256
    guardedge bench latency --model demo --http --rounds 20     # HTTP API overhead next to gRPC's
"""

from __future__ import annotations

import argparse
import json
import math
import time

from guardedge.bench.machine import machine, versions

PATHS = {"safe": 1.0, "unsafe": 0.0, "natural": None}


def configure_parser(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--model", help="model directory, 'demo', or 'fullsize-random' / 'fullsize-random-tiny' (random weights)")
    where.add_argument("--server", help="HOST:PORT of a running 'guardedge serve'")
    parser.add_argument("--concurrency", type=_levels, default=[1, 4, 16], help="comma-separated levels (default 1,4,16)")
    parser.add_argument("--requests", type=int, default=32, help="timed requests per level (default 32)")
    parser.add_argument("--path", choices=tuple(PATHS), default="natural", help="force the safe or unsafe (decode) path")
    parser.add_argument("--image-size", type=_size, help="add a generated WxH image to every request")
    parser.add_argument("--warmup", type=int, default=2, help="untimed requests before each level (default 2)")
    parser.add_argument("--device", help="in-process: cpu, cuda, cuda:N (default: auto)")
    parser.add_argument("--dtype", help="in-process: float32, bfloat16, float16 (default: auto)")
    parser.add_argument("--timeout", type=float, default=300.0, help="--server: per-request deadline in seconds")
    parser.add_argument("--plot", help="write a PNG of latency and throughput per level here (needs matplotlib)")
    parser.add_argument("--http", action="store_true", help="with --model: the HTTP API's overhead over in-process next to "
                        "gRPC's, one server, interleaved (bench/http_overhead.py)")
    parser.add_argument("--rounds", type=int, default=20, help="--http: rounds over the demo samples (default 20)")
    parser.add_argument("--fast-paths", type=_fast_paths, default=None,
                        help="in-process: opt-in switches, e.g. vision_attention=eager,compile_decode (runtime/backends/fastpaths.py)")


def _fast_paths(text: str):
    from guardedge.runtime.backends.fastpaths import parse_fast_paths

    try:
        return parse_fast_paths(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _levels(text: str) -> list[int]:
    levels = [int(x) for x in text.split(",") if x.strip()]
    if not levels or min(levels) < 1:
        raise argparse.ArgumentTypeError(f"--concurrency takes positive integers like 1,4,16; got {text!r}")
    return levels


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--image-size takes WxH, e.g. 560x560; got {text!r}") from None
    if w < 1 or h < 1:
        raise argparse.ArgumentTypeError(f"--image-size must be positive; got {text!r}")
    return w, h


def requests(n: int, path: str, image_size: tuple[int, int] | None, family: str = "llama-guard-3-vision") -> list[dict]:
    """``n`` request dicts the family accepts, cycling over its samples.

    Llama Guard 3 Vision: the demo samples' texts (their images dropped; ``image_size`` adds a
    generated image to each). A family that rates images (LlavaGuard: one image, no message
    text) cycles over its smoke requests' images and policies, verdict-only (the serving
    default); ``image_size`` replaces each image by a generated one of that size."""
    from guardedge.runtime.families import get_family

    guard = get_family(family)
    base = guard.smoke_requests() if guard.requires_image else _text_samples()
    image = _image_part(image_size) if image_size else None
    out = []
    for i in range(n):
        request = {k: v for k, v in base[i % len(base)].items() if k != "rationale"}
        request["request_id"] = f"{request['request_id']}-{i}"
        if image:  # fresh message copies: the samples' own lists are shared between requests
            request["messages"] = [_strip_images(m) for m in request["messages"]]
            request["messages"][0]["content"].insert(0, image)
        if PATHS[path] is not None:
            request["threshold"] = PATHS[path]
        out.append(request)
    return out


def _text_samples() -> list[dict]:
    from guardedge.runtime.demo.samples import samples

    return [{**{k: v for k, v in s.items() if k != "expected"}, "messages": [_strip_images(m) for m in s["messages"]]}
            for s in samples()]


def _image_part(size: tuple[int, int]) -> dict:
    from guardedge.runtime.demo.samples import png_base64

    return {"type": "image", "data": png_base64((120, 60, 200), size)}


def _strip_images(message: dict) -> dict:
    return {**message, "content": [part for part in message["content"] if part["type"] != "image"]}


def percentiles(seconds: list[float]) -> dict:
    """Nearest-rank p50/p95/p99 in ms (None when nothing succeeded)."""
    ms = sorted(s * 1000 for s in seconds)
    pick = lambda q: round(ms[max(0, math.ceil(q * len(ms)) - 1)], 3) if ms else None  # noqa: E731
    return {"p50_ms": pick(0.50), "p95_ms": pick(0.95), "p99_ms": pick(0.99)}


def in_process(engine, reqs: list[dict], level: int, warmup: int) -> dict:
    """Batches of ``level`` requests; each request's latency is its batch's wall time."""
    parsed = [engine.parse(r) for r in reqs]
    if warmup:
        engine.classify(parsed[:warmup])
    latencies, verdicts, errors = [], [], 0
    started = time.perf_counter()
    for i in range(0, len(parsed), level):
        batch = parsed[i : i + level]
        t0 = time.perf_counter()
        try:
            out = engine.classify(batch)
        except Exception:  # noqa: BLE001 - a bench counts failures, it does not stop on them
            errors += len(batch)
            continue
        latencies += [time.perf_counter() - t0] * len(batch)
        verdicts += [v.verdict for v in out]
    return _level(level, len(reqs), time.perf_counter() - started, latencies, verdicts, errors)


def through_server(target: str, reqs: list[dict], level: int, warmup: int, timeout: float) -> dict:
    """``level`` client threads, one request at a time each."""
    from concurrent.futures import ThreadPoolExecutor

    from guardedge.runtime.service.client import GuardClient, request_from_dict

    names = {1: "safe", 2: "unsafe", 3: "unparseable"}
    protos = [request_from_dict(r) for r in reqs]
    with GuardClient(target, timeout=timeout) as client:
        client.wait_until_serving(timeout=timeout)
        for proto in protos[:warmup]:
            client.classify(proto)

        def one(proto):
            t0 = time.perf_counter()
            try:
                response = client.classify(proto)
            except Exception:  # noqa: BLE001 - a bench counts failures, it does not stop on them
                return None
            return time.perf_counter() - t0, names.get(response.verdict, "unspecified")

        started = time.perf_counter()
        with ThreadPoolExecutor(level) as pool:
            results = list(pool.map(one, protos))
        wall = time.perf_counter() - started
    done = [r for r in results if r is not None]
    return _level(level, len(reqs), wall, [r[0] for r in done], [r[1] for r in done], len(results) - len(done))


def _level(level: int, n: int, wall: float, latencies: list[float], verdicts: list[str], errors: int) -> dict:
    counts = {v: verdicts.count(v) for v in sorted(set(verdicts))}
    return {"concurrency": level, "requests": n, "errors": errors, **percentiles(latencies),
            "throughput_rps": round((n - errors) / wall, 3) if wall > 0 else None,
            "wall_s": round(wall, 3), "verdicts": counts}


def measure(args: argparse.Namespace) -> dict:
    report = {"machine": machine(), "versions": versions(), "path": args.path,
              "image_size": "x".join(map(str, args.image_size)) if args.image_size else None,
              "semantics": "server: c client threads" if args.server else "in-process: batches of c; latency = batch wall time"}
    if args.server:
        family = server_family(args.server, args.timeout)
        reqs = requests(args.requests, args.path, args.image_size, family)
        report.update(target=args.server, device="server", family=family)
        report["levels"] = [through_server(args.server, reqs, c, args.warmup, args.timeout) for c in args.concurrency]
        return report
    from guardedge.bench.fullsize import open_engine
    from guardedge.runtime.engine import EngineOptions

    paths = {"fast_paths": args.fast_paths} if getattr(args, "fast_paths", None) else {}
    engine = open_engine(args.model, EngineOptions(device=args.device, dtype=args.dtype,
                                                   max_batch_size=max(args.concurrency), progress=False, **paths))
    info = engine.info()
    reqs = requests(args.requests, args.path, args.image_size, info.family)
    report.update(model=args.model, family=info.family, fast_paths=engine.options.fast_paths.describe(), device=info.device,
                  variant=info.variant, memory_bytes=info.memory_bytes, torch_threads=_torch_threads(), gpu=_gpu_name())
    report["levels"] = [in_process(engine, reqs, c, args.warmup) for c in args.concurrency]
    return report


def server_family(target: str, timeout: float) -> str:
    """The family of the server's default model (its requests must be ones that family accepts)."""
    from guardedge.runtime.service.client import GuardClient

    with GuardClient(target, timeout=timeout) as client:
        client.wait_until_serving(timeout=timeout)
        models = client.list_models().models
    return next((m.family for m in models if m.is_default), models[0].family)


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def _gpu_name() -> str | None:
    import torch

    return torch.cuda.get_device_name() if torch.cuda.is_available() else None


def main(args: argparse.Namespace) -> int:
    if args.http:
        if not args.model:
            raise SystemExit("guardedge bench latency --http: give --model (the bench starts its own server)")
        from guardedge.bench import http_overhead

        return http_overhead.main(args.model, args.rounds)
    report = measure(args)
    where = report.get("variant") or f"server {report.get('target')}"
    print(f"{report['machine']}; {where}; gpu {report.get('gpu')}; " + ", ".join(f"{k} {v}" for k, v in report["versions"].items()))
    print(f"path {report['path']}, image {report['image_size'] or 'none'}; {report['semantics']}")
    print(f"{'conc':>5}{'reqs':>6}{'err':>5}{'p50 ms':>11}{'p95 ms':>11}{'p99 ms':>11}{'req/s':>10}  verdicts")
    for row in report["levels"]:
        cells = "".join(f"{row[k]:11.2f}" if row[k] is not None else f"{'-':>11}" for k in ("p50_ms", "p95_ms", "p99_ms"))
        print(f"{row['concurrency']:5d}{row['requests']:6d}{row['errors']:5d}{cells}{row['throughput_rps'] or 0:10.2f}  {row['verdicts']}")
    if args.plot:
        from guardedge.bench import plots

        plots.latency(report, args.plot)
        print(f"plot: {args.plot}")
    print(json.dumps(report))
    return 1 if any(row["errors"] for row in report["levels"]) else 0

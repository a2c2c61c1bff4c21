"""What the gRPC server adds over an in-process call, and what its batching buys under load.

Same model, same requests (the demo samples: text, images, responses, custom policies), same run:
- **in-process**: ``engine.classify([engine.parse(request)])`` in this process;
- **gRPC**: ``GuardClient.classify`` against a real ``guardedge serve`` process on loopback
  (its own process, as a caller would see it; protos built beforehand).
Both are warmed up, then timed interleaved per request for several rounds; the overhead is the
per-request difference (gRPC minus in-process), reported as p50/p90, next to each side's p50/p90.
The server's own timings split the gRPC figure into server work and the wire/serialization.
Then **load**: ``--clients`` threads send the samples concurrently; requests/s through the
server (with dynamic batching) against the in-process engine one request at a time.
Absolute times mean something only on the machine named in the first line.

    python -m guardedge.bench.grpc_overhead --model demo [--rounds 20] [--clients 8] [--plot overhead.png]
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

from guardedge.runtime.demo.samples import sample_requests
from guardedge.runtime.engine import EngineOptions, load_engine
from guardedge.runtime.models import resolve_model as resolve
from guardedge.runtime.service.background import spawn_server
from guardedge.runtime.service.client import GuardClient, request_from_dict


def percentiles(values: list[float]) -> dict:
    ms = sorted(v * 1000 for v in values)
    p90 = ms[math.ceil(0.9 * len(ms)) - 1]  # nearest rank
    return {"p50_ms": round(statistics.median(ms), 3), "p90_ms": round(p90, 3)}


def measure(model: str, rounds: int, clients: int, threads: int | None) -> dict:
    import torch

    if threads:
        torch.set_num_threads(threads)
    path = str(resolve(model).path)
    engine = load_engine(path, EngineOptions(progress=False))
    cases = sample_requests()
    protos = [request_from_dict(c) for c in cases]
    server_args = ["--metrics-port", "-1", "--log-level", "warning"]
    with spawn_server(path, *server_args) as (_, port), GuardClient(f"127.0.0.1:{port}", timeout=120) as client:
        client.wait_until_serving()
        for case, proto in zip(cases, protos):  # warm-up, and the two sides must agree
            local = engine.classify([engine.parse(case)])[0]
            remote = client.classify(proto)
            assert remote.raw_output == local.raw_output, (case["request_id"], remote.raw_output, local.raw_output)
        inproc, grpc_total, server_total, overhead = [], [], [], []
        for _ in range(rounds):
            for case, proto in zip(cases, protos):
                start = time.perf_counter()
                engine.classify([engine.parse(case)])
                local = time.perf_counter() - start
                start = time.perf_counter()
                response = client.classify(proto)
                remote = time.perf_counter() - start
                inproc.append(local)
                grpc_total.append(remote)
                server_total.append(response.timings.total_seconds)
                overhead.append(remote - local)
        load = _load(engine, client, cases, protos, clients, rounds)
    return {
        "machine": f"{platform.machine()} {platform.processor() or ''} torch {torch.__version__} {torch.get_num_threads()} threads".strip(),
        "model": path, "requests": len(cases), "rounds": rounds,
        "in_process": percentiles(inproc), "grpc": percentiles(grpc_total),
        "server_side": percentiles(server_total),
        "overhead": percentiles(overhead),
        "wire": percentiles([g - s for g, s in zip(grpc_total, server_total)]),
        "load": load,
        "raw": {"in_process_s": inproc, "grpc_s": grpc_total},
    }


def _load(engine, client, cases, protos, clients: int, rounds: int) -> dict:
    """Throughput: in-process one at a time vs the server under ``clients`` concurrent callers."""
    total = len(cases) * max(2, rounds // 4)
    start = time.perf_counter()
    for i in range(total):
        engine.classify([engine.parse(cases[i % len(cases)])])
    sequential = total / (time.perf_counter() - start)
    sizes: list[int] = []
    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        for response in pool.map(lambda i: client.classify(protos[i % len(protos)]), range(total)):
            sizes.append(response.batch_size)
    served = total / (time.perf_counter() - start)
    return {"requests": total, "clients": clients, "in_process_sequential_rps": round(sequential, 2),
            "grpc_concurrent_rps": round(served, 2), "ratio": round(served / sequential, 2),
            "mean_batch_size": round(statistics.mean(sizes), 2)}


def plot(report: dict, path: str) -> None:
    """Latency distributions (empirical CDF) of both sides, one request at a time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for key, label in (("in_process_s", "in-process engine"), ("grpc_s", "through guardedge serve (gRPC, loopback)")):
        ms = sorted(v * 1000 for v in report["raw"][key])
        ax.step(ms, [(i + 1) / len(ms) for i in range(len(ms))], where="post", label=label)
    ax.set_xlabel("latency per request (ms)")
    ax.set_ylabel("fraction of requests")
    ax.set_title(f"gRPC overhead, p50 {report['overhead']['p50_ms']:.2f} ms — {report['machine']}", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="demo")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--threads", type=int, help="torch threads in this process (the server uses its default)")
    parser.add_argument("--plot", help="write a latency CDF PNG here (needs matplotlib: pip install '.[bench]')")
    args = parser.parse_args()
    report = measure(args.model, args.rounds, args.clients, args.threads)
    print(f"{report['machine']}; {report['requests']} requests x {report['rounds']} rounds, interleaved")
    print(f"{'':44}{'p50 ms':>9}{'p90 ms':>9}")
    for key, label in (("in_process", "in-process engine.classify"), ("grpc", "gRPC Classify (client, loopback)"),
                       ("server_side", "  of which server (its own timings)"), ("wire", "  of which wire + (de)serialization"),
                       ("overhead", "overhead (gRPC - in-process, per request)")):
        print(f"{label:44}{report[key]['p50_ms']:9.3f}{report[key]['p90_ms']:9.3f}")
    load = report["load"]
    print(f"load: {load['requests']} requests, {load['clients']} concurrent clients: {load['grpc_concurrent_rps']} req/s "
          f"through the server (mean batch {load['mean_batch_size']}) vs {load['in_process_sequential_rps']} req/s "
          f"in-process one at a time ({load['ratio']}x)")
    if args.plot:
        plot(report, args.plot)
        print(f"plot: {args.plot}")
    print(json.dumps({k: v for k, v in report.items() if k != "raw"}))


if __name__ == "__main__":
    main()

"""``guardedge bench latency --http``: what the HTTP API adds over an in-process call, next to gRPC's.

Same model, same requests (the demo samples: text, images, responses, an excluded category, a
custom policy), same run, one real ``guardedge serve --http-port`` process on loopback:

- **in-process**: ``engine.classify([engine.parse(request)])`` in this process;
- **gRPC**: ``GuardClient.classify`` (protos built beforehand);
- **HTTP**: ``POST /v1/classify`` with the same request dict (its JSON serialized beforehand, images
  inline as base64) on one keep-alive connection (``http.client``), the answer parsed as JSON;
- **HTTP moderations**: ``POST /v1/moderations`` with the text samples as OpenAI ``input``.

Every side is warmed up, then timed interleaved per request for ``--rounds`` rounds (gRPC and HTTP
taking turns going first); a side's
overhead is its per-request difference to the in-process call just before it, reported as p50 /
p90, and ``http_minus_grpc`` is the HTTP overhead's p50 minus gRPC's (the goal: within 1 ms). On a
shared CPU those differences carry the model's own jitter (tens of ms), so each call's time
outside the server's own timings (client round trip minus the server's ``total``: transport,
framing, JSON or protobuf) is reported too, and its per-request HTTP-minus-gRPC difference.
Absolute times mean something only on the machine named in the first line.

    guardedge bench latency --model demo --http [--rounds 20]
"""

from __future__ import annotations

import http.client
import json
import socket
import time

from guardedge.bench.grpc_overhead import percentiles
from guardedge.bench.machine import machine, versions


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class HttpCaller:
    """One keep-alive connection; ``post`` returns the parsed JSON answer."""

    def __init__(self, port: int):
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)

    def post(self, path: str, body: bytes) -> dict:
        self.connection.request("POST", path, body, {"Content-Type": "application/json"})
        response = self.connection.getresponse()
        answer = json.loads(response.read())
        if response.status != 200:
            raise RuntimeError(f"{path}: HTTP {response.status}: {answer}")
        return answer


def _wait_ready(port: int, timeout: float = 300.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            connection.request("GET", "/readyz")
            if connection.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError("the server's HTTP API did not become ready")


def measure(model: str, rounds: int) -> dict:
    import torch

    from guardedge.runtime.demo.samples import sample_requests
    from guardedge.runtime.engine import EngineOptions, load_engine
    from guardedge.runtime.models import resolve_model
    from guardedge.runtime.service.background import spawn_server
    from guardedge.runtime.service.client import GuardClient, request_from_dict

    path = str(resolve_model(model).path)
    engine = load_engine(path, EngineOptions(progress=False))
    cases = sample_requests()
    protos = [request_from_dict(c) for c in cases]
    bodies = [json.dumps(c).encode() for c in cases]
    texts = [json.dumps({"input": c["messages"][0]["content"][0]["text"]}).encode() for c in cases if _is_text(c)]
    http_port = _free_port()
    args = ["--metrics-port", "-1", "--log-level", "warning", "--http-port", str(http_port)]
    with spawn_server(path, *args) as (_, port), GuardClient(f"127.0.0.1:{port}", timeout=120) as client:
        client.wait_until_serving()
        _wait_ready(http_port)
        caller = HttpCaller(http_port)
        for case, proto, body in zip(cases, protos, bodies):  # warm-up; the three sides must agree
            local = engine.classify([engine.parse(case)])[0].raw_output
            assert client.classify(proto).raw_output == local == caller.post("/v1/classify", body)["raw_output"], case["request_id"]
        sides = {name: [] for name in ("in_process", "grpc", "http", "moderations_in_process", "moderations")}
        overhead = {name: [] for name in ("grpc", "http", "moderations")}
        wire = {name: [] for name in ("grpc", "http", "http_minus_grpc")}
        for round_ in range(rounds):
            for case, proto, body in zip(cases, protos, bodies):
                local = _timed(lambda: engine.classify([engine.parse(case)]))
                # The two server sides take turns going first: the second finds the server's caches warm.
                if round_ % 2:
                    over_http, answer = _timed_answer(lambda: caller.post("/v1/classify", body))
                    remote, response = _timed_answer(lambda: client.classify(proto))
                else:
                    remote, response = _timed_answer(lambda: client.classify(proto))
                    over_http, answer = _timed_answer(lambda: caller.post("/v1/classify", body))
                sides["in_process"].append(local)
                sides["grpc"].append(remote)
                sides["http"].append(over_http)
                overhead["grpc"].append(remote - local)
                overhead["http"].append(over_http - local)
                # Outside the server's own timings (handler start to answer): transport, framing, (de)serialization.
                wire["grpc"].append(remote - response.timings.total_seconds)
                wire["http"].append(over_http - answer["timings"]["total_s"])
                wire["http_minus_grpc"].append(wire["http"][-1] - wire["grpc"][-1])
            for case, body in zip([c for c in cases if _is_text(c)], texts):
                local = _timed(lambda: engine.classify([engine.parse(case)]))
                moderated = _timed(lambda: caller.post("/v1/moderations", body))
                sides["moderations_in_process"].append(local)
                sides["moderations"].append(moderated)
                overhead["moderations"].append(moderated - local)
    report = {"machine": f"{machine()}, torch {torch.get_num_threads()} threads", "versions": versions(), "model": model,
              "requests": len(cases), "text_requests": len(texts), "rounds": rounds,
              **{name: percentiles(values) for name, values in sides.items()},
              "overhead": {name: percentiles(values) for name, values in overhead.items()},
              "outside_server": {name: percentiles(values) for name, values in wire.items()}}
    report["http_minus_grpc_p50_ms"] = round(report["overhead"]["http"]["p50_ms"] - report["overhead"]["grpc"]["p50_ms"], 3)
    return report


def _is_text(case: dict) -> bool:
    return (len(case["messages"]) == 1 and "categories" not in case and "excluded_category_keys" not in case
            and case["messages"][0]["content"][0]["type"] == "text")


def _timed(fn) -> float:
    return _timed_answer(fn)[0]


def _timed_answer(fn):
    start = time.perf_counter()
    answer = fn()
    return time.perf_counter() - start, answer


def main(model: str, rounds: int) -> int:
    report = measure(model, rounds)
    print(f"{report['machine']}; {model}; {report['requests']} requests x {report['rounds']} rounds, interleaved")
    print(f"{'':48}{'p50 ms':>9}{'p90 ms':>9}")
    rows = (("in_process", "in-process engine.classify"), ("grpc", "gRPC Classify (loopback)"),
            ("http", "HTTP POST /v1/classify (loopback, keep-alive)"),
            ("moderations_in_process", f"in-process, the {report['text_requests']} text requests"),
            ("moderations", "HTTP POST /v1/moderations, same texts"))
    for key, label in rows:
        print(f"{label:48}{report[key]['p50_ms']:9.3f}{report[key]['p90_ms']:9.3f}")
    for key in ("grpc", "http", "moderations"):
        print(f"{'overhead over in-process: ' + key:48}{report['overhead'][key]['p50_ms']:9.3f}{report['overhead'][key]['p90_ms']:9.3f}")
    for key, label in (("grpc", "gRPC"), ("http", "HTTP /v1/classify"), ("http_minus_grpc", "HTTP minus gRPC, per request")):
        print(f"{'outside the server timings: ' + label:48}{report['outside_server'][key]['p50_ms']:9.3f}{report['outside_server'][key]['p90_ms']:9.3f}")
    print(f"HTTP overhead minus gRPC overhead, p50: {report['http_minus_grpc_p50_ms']:.3f} ms (goal: within 1 ms)")
    print(json.dumps(report))
    return 0

"""``guardedge bench hostile --cases flood,invalid,two-model,aspect,mixed``: the server under mixed load (issue 19).

Each server case starts a real ``guardedge serve`` process on loopback, samples its resident memory
every 5 ms from outside (psutil) and sends raw gRPC calls (the request bytes serialized once; no
client retries) from this process:

- **flood**: ``--calls`` (200) concurrent valid LlavaGuard calls, each a 4000x3000 JPEG (4.6 MB,
  photo-like, q90), against ``demo-llavaguard``: the codes, the latency of refusals and answers,
  the server's peak RSS and its RSS 2 s after the last answer, all above its RSS before. Then the
  same calls against a server with a token that they do not carry (refused before anything is
  parsed): the floor, what moving the bytes alone costs on this machine.
- **invalid**: three bursts of ``--calls`` concurrent LlavaGuard calls that the family refuses
  (the same JPEG plus a text part, what a Llama Guard-style client sends): the RSS 2 s after each
  burst, above the RSS before the first.
- **two-model**: ``demo-llavaguard`` and ``demo`` served together; 32 large images to LlavaGuard
  while a Llama Guard text call is sent every 0.1 s: its latency against the same call idle. Run
  twice: with the default ``max_decoded_bytes`` (most images are refused at once), and with 8 GiB
  (every image admitted, as before issue 19: what the preprocessing threads' turns alone buy).
- **aspect**: a 36,000,000 x 1 PNG (4 KB): the time to its answer and the RSS it costs.
- **probes**: 16, then 256 silent connections held open to the metrics port (and 16 that drip a
  byte every 0.5 s): the latency of 20 ``GET /healthz`` and 5 ``GET /metrics`` meanwhile.

``--baseline-pythonpath DIR`` runs every server case twice, alternating in one run: first with the
servers started on ``PYTHONPATH=DIR`` (a ``guardedge`` package of another commit), then with this
code. A tree of commit C, for instance::

    git archive C runtime proto | tar -x -C /tmp/old && mkdir -p /tmp/oldpkg/guardedge
    ln -s /tmp/old/runtime /tmp/oldpkg/guardedge/runtime && ln -s /tmp/old/proto/guardedge/v1 /tmp/oldpkg/guardedge/v1

Latencies are seconds, p50 / p99 / max: on the client's clock (``codes``, from sending to the
answer, so they include moving the message over loopback) and on the server's (``server_ms``, from
the handler's start to the answer, read from its log). The cases ``images`` and ``mixed`` run in
this process: bench/hostile_engine.py.
"""

from __future__ import annotations

import asyncio
import io
import json
import math
import statistics
import tempfile
import threading
import time
from contextlib import contextmanager

import psutil

from guardedge.bench.hostile_images import large_jpeg


class RssSampler:
    """The peak and current resident memory of another process, sampled every 5 ms."""

    def __init__(self, pid: int):
        self.process = psutil.Process(pid)
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, self.process.memory_info().rss)
            except psutil.Error:
                return
            time.sleep(0.005)

    def now(self) -> int:
        return self.process.memory_info().rss

    def reset(self) -> None:
        self.peak = self.now()

    def __enter__(self) -> RssSampler:
        self.reset()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def mb(value: float) -> float:
    return round(value / 2**20, 1)


def latency(seconds: list[float]) -> dict:
    if not seconds:
        return {}
    s = sorted(seconds)
    return {"n": len(s), "p50_s": round(statistics.median(s), 3), "p99_s": round(s[math.ceil(0.99 * len(s)) - 1], 3),
            "max_s": round(s[-1], 3)}


def request_bytes(image: bytes, text: str = "", model: str = "", request_id: str = "") -> bytes:
    from guardedge.v1 import guard_pb2 as pb

    content = [pb.ContentPart(image=pb.Image(data=image))] if image else []
    if text:
        content.append(pb.ContentPart(text=text))
    return pb.ClassifyRequest(request_id=request_id, model=model,
                              messages=[pb.Message(role=pb.ROLE_USER, content=content)]).SerializeToString()


async def call_many(address: str, payloads: list[bytes], channels: int = 8, timeout: float = 300.0) -> list[tuple[str, float]]:
    """Send every payload at once (spread over ``channels`` connections); (code name, seconds) each."""
    import grpc

    options = [("grpc.max_send_message_length", 64 * 2**20), ("grpc.max_receive_message_length", 64 * 2**20),
               ("grpc.enable_retries", 0)]
    opened = [grpc.aio.insecure_channel(address, options=options) for _ in range(channels)]
    calls = [c.unary_unary("/guardedge.v1.GuardService/Classify", request_serializer=None, response_deserializer=None)
             for c in opened]

    async def one(i: int, payload: bytes) -> tuple[str, float]:
        started = time.perf_counter()
        try:
            await calls[i % channels](payload, timeout=timeout)
            code = "OK"
        except grpc.RpcError as error:
            code = error.code().name
        return code, time.perf_counter() - started

    try:
        return await asyncio.gather(*(one(i, p) for i, p in enumerate(payloads)))
    finally:
        for c in opened:
            await c.close()


class Server:
    """A ``guardedge serve`` process: its pid, address, and (once stopped) its log records."""

    def __init__(self, process, address: str, log):
        self.process, self.pid, self.address, self._log, self.records = process, process.pid, address, log, []

    def read_log(self) -> None:
        self._log.seek(0)
        self.records = [json.loads(line) for line in self._log.read().decode("utf-8", "replace").splitlines()
                        if line.startswith("{")]

    def server_ms(self) -> dict:
        """Server-side milliseconds from the handler's start to the answer, by code."""
        out: dict[str, list[float]] = {}
        for r in self.records:
            if r.get("msg") in ("request failed", "classified") and "total_ms" in r:
                out.setdefault(r["code"], []).append(r["total_ms"] / 1000)
        return {code: latency(seconds) for code, seconds in sorted(out.items())}


@contextmanager
def server(*models: str, extra: tuple[str, ...] = ()):
    from guardedge.runtime.service.background import spawn_server
    from guardedge.runtime.service.client import GuardClient

    args = [a for m in models[1:] for a in ("--model", m)] + ["--metrics-port", "-1", *extra]
    with tempfile.TemporaryFile() as log:
        with spawn_server(models[0], *args, start_timeout=600, stderr=log) as (process, port):
            with GuardClient(f"127.0.0.1:{port}", timeout=120) as client:
                client.wait_until_serving(timeout=600)
            running = Server(process, f"127.0.0.1:{port}", log)
            yield running
        running.read_log()


def _codes(results: list[tuple[str, float]]) -> dict:
    out: dict[str, dict] = {}
    for code in sorted({c for c, _ in results}):
        out[code] = latency([s for c, s in results if c == code])
    return out


def flood(calls: int, extra: tuple[str, ...] = ()) -> dict:
    payload = request_bytes(large_jpeg())
    with server("demo-llavaguard", extra=extra) as running, RssSampler(running.pid) as rss:
        asyncio.run(call_many(running.address, [payload] * 2))  # warm-up: one-time allocations are not counted
        time.sleep(1.0)
        base = rss.now()
        rss.reset()
        results = asyncio.run(call_many(running.address, [payload] * calls))
        peak = rss.peak
        time.sleep(2.0)
        after = rss.now()
    with server("demo-llavaguard", extra=("--token-file", _token_file())) as floor:
        unread = asyncio.run(call_many(floor.address, [payload] * calls))
    return {"case": f"flood: {calls} x 4000x3000 JPEG ({len(payload) / 1e6:.1f} MB) to LlavaGuard", "codes": _codes(results),
            "server_ms": running.server_ms(), "floor_unauthenticated": _codes(unread),
            "base_rss_mb": mb(base), "peak_extra_mb": mb(peak - base), "after_2s_extra_mb": mb(after - base)}


def _token_file() -> str:
    handle = tempfile.NamedTemporaryFile("w", suffix=".tokens", delete=False)
    handle.write("bench-token-0123456789abcdef\n")
    handle.close()
    return handle.name


def invalid(calls: int, bursts: int = 3, extra: tuple[str, ...] = ()) -> dict:
    payload = request_bytes(large_jpeg(), text="What is in this picture?")
    with server("demo-llavaguard", extra=extra) as running, RssSampler(running.pid) as rss:
        asyncio.run(call_many(running.address, [payload] * 2))
        time.sleep(1.0)
        base = rss.now()
        rss.reset()
        after, codes = [], {}
        for _ in range(bursts):
            results = asyncio.run(call_many(running.address, [payload] * calls))
            codes = _codes(results)
            time.sleep(2.0)
            after.append(mb(rss.now() - base))
        peak = rss.peak
    return {"case": f"invalid: {bursts} bursts of {calls} refused LlavaGuard calls (4.6 MB JPEG + text)", "codes": codes,
            "server_ms": running.server_ms(), "base_rss_mb": mb(base), "peak_extra_mb": mb(peak - base),
            "after_each_burst_2s_extra_mb": after}


def two_model(images: int = 32, extra: tuple[str, ...] = ()) -> dict:
    big = request_bytes(large_jpeg(), model="demo-llavaguard")
    text = request_bytes(b"", text="How do I bake sourdough bread?", model="demo")

    async def scenario(address: str) -> tuple[list[float], list[float], list[tuple[str, float]]]:
        idle = [s for _, s in [(await call_many(address, [text], channels=1))[0] for _ in range(10)]]
        flood = asyncio.ensure_future(call_many(address, [big] * images))
        loaded: list[float] = []
        while not flood.done():
            loaded.append((await call_many(address, [text], channels=1))[0][1])
            await asyncio.sleep(0.1)
        return idle, loaded, await flood

    with server("demo-llavaguard", "demo", extra=extra) as running:
        asyncio.run(call_many(running.address, [big, text]))
        idle, loaded, results = asyncio.run(scenario(running.address))
    return {"case": f"two-model: Llama Guard text calls while {images} large images go to LlavaGuard",
            "text_idle": latency(idle), "text_loaded": latency(loaded), "images": _codes(results)}


def aspect(extra: tuple[str, ...] = ()) -> dict:
    from PIL import Image

    out = io.BytesIO()
    Image.new("1", (36_000_000, 1)).save(out, "PNG")
    payload = request_bytes(out.getvalue())
    with server("demo-llavaguard", extra=extra) as running, RssSampler(running.pid) as rss:
        time.sleep(0.5)
        base = rss.now()
        rss.reset()
        [(code, seconds)] = asyncio.run(call_many(running.address, [payload], channels=1))
        peak = rss.peak
    return {"case": f"aspect: one 36000000x1 PNG ({len(out.getvalue()) // 1024} KB) to LlavaGuard", "code": code,
            "seconds": round(seconds, 3), "peak_extra_mb": mb(peak - base)}


def _get(port: int, path: str, timeout: float = 30.0) -> float | None:
    """Seconds to a complete answer; None when the connection was refused, closed or timed out."""
    import urllib.request

    started = time.perf_counter()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as reply:
            reply.read()
    except OSError:  # connection reset or closed unanswered, timeouts (http.client's errors are OSErrors)
        return None
    return time.perf_counter() - started


def probes(extra: tuple[str, ...] = ()) -> dict:
    import socket

    from guardedge.runtime.service.background import spawn_server
    from guardedge.runtime.service.client import GuardClient

    out = {"case": "probes: /healthz and /metrics with idle and dripping connections held open to the metrics port"}
    with spawn_server("demo", "--metrics-port", "0", "--log-level", "error", *extra, start_timeout=600) as (process, port):
        with GuardClient(f"127.0.0.1:{port}", timeout=120) as client:
            client.wait_until_serving(timeout=600)
        metrics_port = _metrics_port(process.pid, port)
        for idle in (16, 256):
            held = [socket.create_connection(("127.0.0.1", metrics_port)) for _ in range(idle)]
            drippers = [socket.create_connection(("127.0.0.1", metrics_port)) for _ in range(16)]
            health, scrape = [], []
            try:
                for i in range(20):
                    for s in drippers:
                        try:
                            s.sendall(b"G")
                        except OSError:
                            pass
                    health.append(_get(metrics_port, "/healthz"))
                    if i % 4 == 0:
                        scrape.append(_get(metrics_port, "/metrics"))
                    time.sleep(0.5)
            finally:
                for s in held + drippers:
                    s.close()
            out[f"idle_{idle}"] = {"healthz": latency([s for s in health if s is not None]),
                                   "healthz_unanswered": sum(s is None for s in health),
                                   "metrics": latency([s for s in scrape if s is not None]),
                                   "metrics_unanswered": sum(s is None for s in scrape)}
    return out


def _metrics_port(pid: int, grpc_port: int) -> int:
    """The port a serve process listens on besides gRPC's: its metrics port (from /proc)."""
    [port] = {c.laddr.port for c in psutil.Process(pid).net_connections("tcp")
              if c.status == psutil.CONN_LISTEN and c.laddr.port != grpc_port}
    return port


def _engine_case(name: str):
    from guardedge.bench import hostile_engine

    return getattr(hostile_engine, name)


CASES = {"flood": flood, "invalid": invalid, "two-model": two_model, "aspect": aspect, "probes": probes,
         "images": lambda: _engine_case("images")(), "mixed": lambda rounds=10, batch=8: _engine_case("mixed")(rounds, batch)}


SERVER_CASES = ("flood", "invalid", "two-model", "aspect", "probes")


def run(names: list[str], calls: int, rounds: int = 10, batch: int = 8, baseline: str = "") -> list[dict]:
    import os

    rows = []
    for name in names:
        if baseline and name in SERVER_CASES:
            os.environ["PYTHONPATH"] = baseline  # the servers this case starts run the baseline's code
            try:
                rows += [{**row, "side": f"baseline {baseline}"} for row in _one(name, calls, rounds, batch, True)]
            finally:
                os.environ.pop("PYTHONPATH", None)
        rows += _one(name, calls, rounds, batch, False)
    return rows


def _one(name: str, calls: int, rounds: int, batch: int, baseline: bool) -> list[dict]:
    if name in ("flood", "invalid"):
        rows = [CASES[name](calls)]
    elif name == "mixed":
        rows = [CASES["mixed"](rounds, batch)]
    elif name == "two-model" and not baseline:  # a baseline before issue 19 has no max_decoded_bytes
        every = two_model(extra=("--max-decoded-bytes", str(8 * 2**30)))
        rows = [two_model(), {**every, "max_decoded_bytes": 8 * 2**30}]
    else:
        rows = [CASES[name]()]
    for row in rows:
        print(json.dumps(row), flush=True)
    return rows

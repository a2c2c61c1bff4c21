"""The HTTP API's port under hostile callers: oversized and endless bodies, slow clients, many
connections, a full queue, deadlines and the drain. The gRPC port's hostile cases are
tests/test_service_hostile.py; these hold the HTTP port to the same limits.

One server for the module (the demo guard behind a ControlledEngine whose gate holds model work),
a short body timeout so slow clients are cut off in a second.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request

import pytest

from guardedge.runtime.service import http_body

from service_support import ControlledEngine, serving

pytestmark = pytest.mark.timeout(180)
TEXT = {"model": "demo", "input": "How do I bake sourdough bread?"}


@pytest.fixture(scope="module")
def api(demo_engine):
    saved, http_body.BODY_SECONDS = http_body.BODY_SECONDS, 1.0
    engine = ControlledEngine(demo_engine)
    try:
        with serving(engine, http_port=0, max_queue_size=2, max_batch_size=1, max_message_bytes=1 << 20,
                     max_image_bytes=1 << 19) as (server, _):
            yield server, engine
    finally:
        http_body.BODY_SECONDS = saved


def _port(api) -> int:
    return api[0].server.http_port


def _post(port: int, body, headers: dict | None = None, timeout: float = 30) -> tuple[int, dict]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/moderations", data=data, method="POST",
                                     headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def _get(port: int, path: str) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as reply:
        return reply.status


def _raw(port: int, head: bytes) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(head)
    return s


def _status(s: socket.socket, timeout: float = 10) -> int:
    s.settimeout(timeout)
    line = s.recv(4096).split(b"\r\n", 1)[0]
    return int(line.split()[1]) if line else 0


def test_an_oversized_chunked_body_is_cut_off_at_the_limit(api):
    s = _raw(_port(api), b"POST /v1/moderations HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
    chunk = b"a" * 65536
    try:
        for _ in range(40):  # 2.5 MB against a 1 MiB limit; the server answers 413 once it is over
            s.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
    except OSError:
        pass  # the server may close the connection once it has answered
    assert _status(s) == 413
    s.close()


def test_a_declared_oversized_body_is_refused_before_it_is_sent(api):
    s = _raw(_port(api), b"POST /v1/moderations HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999\r\n\r\n")
    assert _status(s, timeout=5) == 413  # nothing of the body was sent
    s.close()


def test_a_client_dripping_its_body_is_cut_off_and_probes_still_answer(api):
    port = _port(api)
    drippers = [_raw(port, b"POST /v1/moderations HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{") for _ in range(16)]
    started = time.monotonic()
    try:
        assert _get(port, "/healthz") == 200 and time.monotonic() - started < 1.0
        for s in drippers:
            s.sendall(b" ")
        assert all(_status(s) == 408 for s in drippers)
        assert time.monotonic() - started < 5  # BODY_SECONDS (1 s here), not forever
    finally:
        for s in drippers:
            s.close()


def test_many_idle_connections_do_not_hold_up_requests(api):
    port = _port(api)
    idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(200)]
    try:
        time.sleep(0.2)
        started = time.monotonic()
        assert _get(port, "/readyz") == 200
        assert _post(port, TEXT)[0] == 200
        assert time.monotonic() - started < 5
    finally:
        for s in idle:
            s.close()


def test_a_full_queue_is_429_and_a_deadline_504(api):
    server, engine = api
    port = _port(api)
    engine.gate.clear()
    answers: list[int] = []
    try:
        held = [threading.Thread(target=lambda: answers.append(_post(port, TEXT)[0])) for _ in range(3)]
        for thread in held:
            thread.start()
            time.sleep(0.2)  # in order: one on the engine, two queued (max_queue_size=2)
        status, body = _post(port, TEXT)
        assert status == 429 and body["error"]["code"] == "RESOURCE_EXHAUSTED"
        assert server.server.servicer.slots["demo"].batcher.depth >= 1
    finally:
        engine.gate.set()
    for thread in held:
        thread.join(30)
    assert sorted(answers) == [200, 200, 200]
    engine.gate.clear()
    try:
        blocker = threading.Thread(target=lambda: answers.append(_post(port, TEXT)[0]))
        blocker.start()
        time.sleep(0.2)
        started = time.monotonic()
        status, body = _post(port, TEXT, headers={"X-Request-Timeout": "0.5"})
        assert status == 504 and body["error"]["code"] == "DEADLINE_EXCEEDED" and time.monotonic() - started < 3
    finally:
        engine.gate.set()
    blocker.join(30)


def test_images_over_the_byte_limit_are_refused_before_decoding(api):
    big = "data:image/png;base64," + "A" * 720_000  # past max_image_bytes once decoded, under the body limit
    status, body = _post(_port(api), {"model": "demo", "input": [{"type": "image_url", "image_url": {"url": big}}]})
    assert status == 400 and "max_image_bytes" in body["error"]["message"]


def test_draining_answers_503_and_readyz_says_so(api):
    server, _ = api
    port = _port(api)
    server.server.servicer.draining = True
    try:
        status, body = _post(port, TEXT)
        assert status == 503 and body["error"]["code"] == "UNAVAILABLE"
        with pytest.raises(urllib.error.HTTPError) as ready:
            _get(port, "/readyz")
        assert ready.value.code == 503
    finally:
        server.server.servicer.draining = False

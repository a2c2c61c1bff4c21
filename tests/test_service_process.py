"""`guardedge serve` as a real process: SIGTERM under load drains, answers everything, exits 0.

Also the CLI client (`guardedge classify --server`) against an in-process server: same inputs and
JSON lines as the in-process form.

    .venv/bin/pytest tests/test_service_process.py -q
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from service_support import SAFE, UNSAFE, serving

from guardedge.runtime.cli import main as cli_main
from guardedge.runtime.service.client import GuardClient, GuardRpcError

pytestmark = pytest.mark.timeout(300)


def start_server(demo_dir, tmp_path, *extra: str) -> tuple[subprocess.Popen, int]:
    port_file = tmp_path / "port"
    proc = subprocess.Popen(
        [sys.executable, "-m", "guardedge.runtime.cli", "serve", "--model", str(demo_dir), "--port", "0",
         "--port-file", str(port_file), "--metrics-port", "-1", *extra],
        stderr=subprocess.PIPE, text=True,
    )
    end = time.monotonic() + 120
    while not (port_file.exists() and port_file.read_text().strip()):
        if proc.poll() is not None or time.monotonic() > end:
            proc.kill()
            raise AssertionError(f"server did not start: {proc.stderr.read()}")
        time.sleep(0.05)
    return proc, int(port_file.read_text())


def test_sigterm_under_load_answers_every_request_and_exits_zero(demo_dir, tmp_path):
    proc, port = start_server(demo_dir, tmp_path, "--max-batch-size", "2", "--grace-seconds", "60")
    try:
        client = GuardClient(f"127.0.0.1:{port}", timeout=60, attempts=1)
        client.wait_until_serving(timeout=120)
        first_answer = threading.Event()
        outcomes: list[str] = []

        def call(i: int) -> str:
            try:
                response = client.classify({**(UNSAFE if i % 2 else SAFE), "request_id": f"load-{i}"})
                assert response.request_id == f"load-{i}"
                first_answer.set()
                return "OK"
            except GuardRpcError as exc:
                return exc.code.name

        with ThreadPoolExecutor(24) as pool:
            futures = [pool.submit(call, i) for i in range(24)]
            assert first_answer.wait(60)
            proc.send_signal(signal.SIGTERM)
            sent_at = time.monotonic()
            late = [pool.submit(call, 100 + i) for i in range(4)]  # arrive while draining or after
            outcomes = [f.result(90) for f in futures + late]
        rc = proc.wait(90)
        drained_in = time.monotonic() - sent_at
    finally:
        if proc.poll() is None:
            proc.kill()
    log = proc.stderr.read()
    assert rc == 0, log
    assert set(outcomes) <= {"OK", "UNAVAILABLE"}, outcomes  # every request got an answer or a clear refusal
    records = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    messages = [r["msg"] for r in records]
    assert "draining" in messages and messages[-1] == "stopped", log[-2000:]
    # Every request in flight when the drain began was answered, not refused.
    drain = next(r for r in records if r["msg"] == "draining")
    in_flight = drain.get("in_flight", drain.get("fields", {}).get("in_flight"))
    assert in_flight >= 1 and outcomes.count("OK") >= in_flight, (in_flight, outcomes)
    assert drained_in < 60 + 3  # grace + the documented bound
    client.close()


@pytest.mark.parametrize("broken", ["missing", "empty"])
def test_a_model_that_cannot_load_exits_two_with_the_reason(tmp_path, broken):
    # Exit 2 (configuration error): systemd's RestartPreventExitStatus=2 stops a restart loop.
    model = tmp_path / broken
    if broken == "empty":
        model.mkdir()
    port_file = tmp_path / "port"
    proc = subprocess.run(
        [sys.executable, "-m", "guardedge.runtime.cli", "serve", "--model", str(model), "--port", "0",
         "--port-file", str(port_file), "--metrics-port", "-1"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert str(model) in proc.stderr and "Traceback" not in proc.stderr


def test_bad_configuration_exits_two_and_says_what_to_fix(tmp_path):
    config = tmp_path / "guardedge.toml"
    config.write_text('port = "high"\n')
    proc = subprocess.run([sys.executable, "-m", "guardedge.runtime.cli", "serve", "--config", str(config)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "port must be an int" in proc.stderr and str(config) in proc.stderr


def test_cli_classify_through_the_server_matches_the_in_process_cli(demo_engine, tmp_path, capsys):
    requests = tmp_path / "requests.jsonl"
    lines = [
        json.dumps({**SAFE, "request_id": "a"}),
        json.dumps({**UNSAFE, "request_id": "b"}),
        "{not json",
        json.dumps({"messages": [{"role": "system", "content": "hi"}]}),
        json.dumps({"messages": [{"role": "user", "content": [{"type": "image", "data": "aGVsbG8="}]}], "request_id": "img"}),
    ]
    requests.write_text("\n".join(lines) + "\n")
    with serving(demo_engine) as (server, _):
        rc_remote = cli_main(["classify", "--server", server.address, "--input", str(requests), "--json"])
        remote = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    rc_local = cli_main(["classify", "--model", str(demo_engine.model_dir.path), "--input", str(requests), "--json"])
    local = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert rc_remote == rc_local == 2  # some requests were invalid
    assert len(remote) == len(local) == 5
    for r, l in zip(remote, local):
        if l["verdict"] is None:
            assert r["verdict"] is None and r["line"] == l["line"]
            assert [v["field"].replace(".image.data", ".data") for v in r["error"]["violations"]] == [v["field"] for v in l["error"]["violations"]]
            continue
        for key in ("request_id", "verdict", "categories", "raw_output", "error"):
            assert r[key] == l[key], key
        assert r["unsafe_probability"] == pytest.approx(l["unsafe_probability"], abs=1e-5)
        assert set(r) == set(l)


def test_cli_classify_server_unreachable_reports_unavailable(capsys):
    rc = cli_main(["classify", "--server", "127.0.0.1:1", "--text", "hello", "--json", "--timeout", "3"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 2 and out["error"]["code"] in (grpc.StatusCode.UNAVAILABLE.name, grpc.StatusCode.DEADLINE_EXCEEDED.name)


def test_a_port_in_use_exits_two_with_the_address(tmp_path):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run([sys.executable, "-m", "guardedge.runtime.cli", "serve", "--port", str(port), "--metrics-port", "-1"],
                              capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in proc.stderr and "Traceback" not in proc.stderr

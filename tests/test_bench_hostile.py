"""bench hostile's load cases (bench/hostile_load.py): the helpers they report with. The cases
themselves start servers and send hundreds of MB; they run by hand (docs/service.md, bench/RESULTS.md)."""

from __future__ import annotations

import argparse
import io
import json

import pytest

from guardedge.bench import hostile, hostile_load


def test_latency_percentiles():
    assert hostile_load.latency([0.3, 0.1, 0.2]) == {"n": 3, "p50_s": 0.2, "p99_s": 0.3, "max_s": 0.3}
    assert hostile_load.latency([]) == {}


def test_server_side_times_are_read_from_the_log():
    log = io.BytesIO(b"\n".join(json.dumps(r).encode() for r in [
        {"msg": "request failed", "code": "RESOURCE_EXHAUSTED", "total_ms": 2.0},
        {"msg": "request failed", "code": "RESOURCE_EXHAUSTED", "total_ms": 4.0},
        {"msg": "classified", "code": "OK", "total_ms": 900.0},
        {"msg": "serving"},
    ]) + b"\nnot json\n")
    running = hostile_load.Server(type("P", (), {"pid": 1})(), "x", log)
    running.read_log()
    assert running.server_ms() == {"OK": {"n": 1, "p50_s": 0.9, "p99_s": 0.9, "max_s": 0.9},
                                   "RESOURCE_EXHAUSTED": {"n": 2, "p50_s": 0.003, "p99_s": 0.004, "max_s": 0.004}}


def test_the_request_bytes_are_a_classify_request():
    from guardedge.v1 import guard_pb2 as pb

    request = pb.ClassifyRequest.FromString(hostile_load.request_bytes(b"\x89PNG", text="hi", model="m"))
    assert request.model == "m" and request.messages[0].content[0].image.data == b"\x89PNG"
    assert request.messages[0].content[1].text == "hi"


def test_unknown_cases_are_refused():
    parser = argparse.ArgumentParser()
    hostile.configure_parser(parser)
    with pytest.raises(SystemExit, match="unknown cases"):
        hostile.main(parser.parse_args(["--cases", "flood,nonsense"]))

"""The small ones of issue 19 (item 10): a call whose deadline passed is counted DEADLINE_EXCEEDED,
not CANCELLED, wherever it was; threads above the CPU quota are warned about."""

from __future__ import annotations

import logging
import time

import grpc
import pytest
from service_support import SAFE, serving

from guardedge.runtime import threads


class SlowPrepare:
    """The demo engine with a preprocessing that takes ``seconds`` (a large image's decode)."""

    def __init__(self, engine, seconds: float):
        self._engine, self.seconds = engine, seconds

    def __getattr__(self, name):
        return getattr(self._engine, name)

    def prepare(self, request):
        time.sleep(self.seconds)
        return self._engine.prepare(request)


def test_a_deadline_that_passes_during_preprocessing_is_counted_deadline_exceeded(demo_engine, caplog):
    caplog.set_level(logging.INFO, logger="guardedge.server")
    engine = SlowPrepare(demo_engine, 0.0)
    with serving(engine) as (server, client):
        engine.seconds = 1.0  # after the warm-up
        with pytest.raises(grpc.RpcError) as caught:
            client.stub.Classify(client_request(), timeout=0.3)
        assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        time.sleep(1.2)  # the server side ends when its preprocessing returns
        read = server.server.metrics.registry.get_sample_value
        expired = read("guardedge_requests_total", {"method": "Classify", "code": "DEADLINE_EXCEEDED"})
        cancelled = read("guardedge_requests_total", {"method": "Classify", "code": "CANCELLED"})
    assert expired == 1.0 and not cancelled
    assert any(r.getMessage() == "request expired" for r in caplog.records)


def client_request():
    from guardedge.runtime.service.client import request_from_dict

    return request_from_dict(SAFE)


def test_threads_above_the_cpu_quota_are_warned_about(monkeypatch, caplog):
    import torch

    before = torch.get_num_threads()
    monkeypatch.setattr(threads, "default_threads", lambda root=None: 2)
    try:
        with caplog.at_level(logging.WARNING, logger="guardedge.threads"):
            threads.apply(4)
    finally:
        torch.set_num_threads(before)
    [record] = [r for r in caplog.records if r.name == "guardedge.threads"]
    assert "threads=4 is above the 2 CPUs" in record.getMessage()
    assert threads.oversubscribed(2) == ""

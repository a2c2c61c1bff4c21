"""Admission on arrival per model, and a fair share of preprocessing (issue 19, items 2 and 4).

A request is admitted or refused the moment it arrives, before it is parsed or its image decoded:
by the model's queue slots and by the decoded bytes of the images it has not encoded yet. The
preprocessing threads serve the models in turn, and the time a request waits for one is its own
stage. Latency and memory under real floods: ``guardedge bench hostile --cases flood,two-model``.
"""

from __future__ import annotations

import asyncio
import io
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from PIL import Image
from service_support import SAFE, ControlledEngine, config, serving

from guardedge.runtime.service.admission import ByteBudget, image_cost
from guardedge.runtime.service.background import BackgroundServer
from guardedge.runtime.service.client import GuardClient
from guardedge.runtime.service.workers import FairPool
from guardedge.v1 import guard_pb2 as pb


def _png(size: tuple[int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (10, 120, 200)).save(out, "PNG")
    return out.getvalue()


def _with_image(data: bytes, request_id: str) -> pb.ClassifyRequest:
    return pb.ClassifyRequest(request_id=request_id, messages=[pb.Message(role=pb.ROLE_USER, content=[
        pb.ContentPart(image=pb.Image(data=data)), pb.ContentPart(text="what is this?")])])


def test_image_cost_reads_the_header_only():
    request = _with_image(_png((300, 200)), "r")
    assert image_cost(request) == 300 * 200 * 4 * 2
    assert image_cost(_with_image(b"not an image", "r")) == 0  # validation refuses it later, naming the field


def test_a_byte_budget_admits_one_oversized_image_alone():
    budget = ByteBudget(1000)
    assert budget.reserve(5000)  # nothing else in flight: an image larger than the budget still gets through
    assert not budget.reserve(1)
    budget.release(5000)
    assert budget.reserve(600) and budget.reserve(400) and not budget.reserve(1)


def test_images_beyond_the_decoded_bytes_budget_are_refused_at_once(demo_engine):
    engine = ControlledEngine(demo_engine)
    image = _png((400, 300))  # 0.96 MB to decode, by its header
    with serving(engine, max_decoded_bytes=2_000_000, max_queue_size=64, preprocess_workers=1) as (server, client):
        engine.gate.clear()
        engine.entered.clear()
        stub = client.stub
        with ThreadPoolExecutor(8) as pool:
            blocker = pool.submit(stub.Classify, pb.ClassifyRequest(messages=[pb.Message(role=pb.ROLE_USER, content=[
                pb.ContentPart(text="hello")])]), timeout=30)
            assert engine.entered.wait(10)
            slot = server.server.servicer.slots["demo"]
            slot.decoding.reserve(1_500_000)  # images of other requests not yet encoded
            started = time.monotonic()
            with pytest.raises(grpc.RpcError) as caught:
                stub.Classify(_with_image(image, "over"), timeout=30)
            took = time.monotonic() - started
            slot.decoding.release(1_500_000)
            admitted = pool.submit(stub.Classify, _with_image(image, "fits"), timeout=30)
            time.sleep(0.3)
            engine.gate.set()
            assert admitted.result(30).request_id == "fits" and blocker.result(30)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "max_decoded_bytes" in caught.value.details() and took < 1.0
    assert slot.decoding.in_flight == 0 and slot.batcher.depth == 0  # everything given back


def test_the_fair_pool_serves_the_models_in_turn():
    order = []

    async def scenario():
        pool = FairPool(workers=1)
        gate = threading.Event()
        first = asyncio.ensure_future(pool.run("a", gate.wait))  # occupies the only worker
        await asyncio.sleep(0.1)
        jobs = [asyncio.ensure_future(pool.run("a", order.append, f"a{i}")) for i in range(4)]
        jobs.append(asyncio.ensure_future(pool.run("b", order.append, "b0")))
        await asyncio.sleep(0.05)
        gate.set()
        await asyncio.gather(first, *jobs)
        pool.shutdown()

    asyncio.run(scenario())
    assert order.index("b0") <= 1, order  # b's one job does not wait behind a's four


def test_a_cancelled_job_never_runs():
    ran = []

    async def scenario():
        pool = FairPool(workers=1)
        gate = threading.Event()
        first = asyncio.ensure_future(pool.run("a", gate.wait))
        await asyncio.sleep(0.1)
        doomed = asyncio.ensure_future(pool.run("a", ran.append, "doomed"))
        await asyncio.sleep(0.05)
        doomed.cancel()
        await asyncio.sleep(0.05)  # the task takes its cancellation: the job leaves the queue
        gate.set()
        await first
        await asyncio.sleep(0.1)
        pool.shutdown()

    asyncio.run(scenario())
    assert ran == []


class SlowPrepare:
    """An engine whose preprocessing takes ``seconds`` per request (a large image's decode)."""

    def __init__(self, engine, seconds: float):
        self._engine, self.seconds = engine, seconds

    def __getattr__(self, name):
        return getattr(self._engine, name)

    def prepare(self, request):
        time.sleep(self.seconds)
        return self._engine.prepare(request)


def test_one_models_images_do_not_starve_another_model(demo_engine):
    # 32 large images to one model made a text call to the other wait 14.3 s (its idle time: 0.02 s).
    slow = "demo-llavaguard"  # served under that alias; the engine is the demo guard with a slow preprocessing
    engines = {slow: SlowPrepare(demo_engine, 0.3), "demo": demo_engine}
    server = BackgroundServer(config(models=(slow, "demo"), preprocess_workers=2, max_queue_size=64), engines)
    try:
        server.start()
        with GuardClient(server.address, timeout=60) as client, ThreadPoolExecutor(16) as pool:
            flood = [pool.submit(client.classify, {**SAFE, "model": slow, "request_id": f"s{i}"}) for i in range(12)]
            time.sleep(0.2)
            started = time.monotonic()
            quick = client.classify({**SAFE, "model": "demo", "request_id": "quick"})
            took = time.monotonic() - started
            for f in flood:
                f.result(60)
    finally:
        server.stop()
    # One 0.3 s job per worker ahead of it at most, not the 12 x 0.3 / 2 = 1.8 s queued before it.
    assert took < 1.0, took
    assert quick.timings.preprocess_wait_seconds < 0.6, quick.timings

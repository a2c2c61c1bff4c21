"""The gRPC service on loopback: every status path, batching, queue, deadlines, streams, health.

Servers run in-process on a background thread (BackgroundServer) over the session's demo engine,
wrapped in a ControlledEngine where a test must hold or break model work. The SIGTERM drain of a
real `guardedge serve` process is in test_service_process.py.

    .venv/bin/pytest tests/test_service.py -q
"""

from __future__ import annotations

import asyncio
import base64
import io
import logging
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from PIL import Image
from service_support import SAFE, UNSAFE, ControlledEngine, serving

from guardedge.runtime.service.client import AsyncGuardClient, GuardRpcError, response_to_json
from guardedge.v1 import guard_pb2 as pb

pytestmark = pytest.mark.timeout(120)


def png(width: int = 32, height: int = 32, color=(200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buffer, "PNG")
    return buffer.getvalue()


def text_request(text: str, role: int = pb.ROLE_USER, **fields) -> pb.ClassifyRequest:
    return pb.ClassifyRequest(messages=[pb.Message(role=role, content=[pb.ContentPart(text=text)])], **fields)


def image_request(data: bytes, text: str = "What is in this image?", mime_type: str = "") -> pb.ClassifyRequest:
    parts = [pb.ContentPart(image=pb.Image(data=data, mime_type=mime_type)), pb.ContentPart(text=text)]
    return pb.ClassifyRequest(messages=[pb.Message(role=pb.ROLE_USER, content=parts)])


def rpc_error(fn) -> GuardRpcError:
    with pytest.raises(GuardRpcError) as caught:
        fn()
    return caught.value


@pytest.fixture(scope="module")
def served(demo_engine):
    with serving(demo_engine, max_queue_delay_ms=0) as (server, client):
        yield server, client


# -- answers --------------------------------------------------------------------------------


def test_classify_answers_like_the_in_process_engine(served, demo_engine):
    _, client = served
    for obj in (SAFE, UNSAFE):
        [expected] = demo_engine.classify([demo_engine.parse(obj)])
        got = response_to_json(client.classify(obj))
        assert (got["verdict"], got["categories"], got["raw_output"]) == (expected.verdict, list(expected.categories), expected.raw_output)
        assert got["unsafe_probability"] == pytest.approx(expected.unsafe_probability, abs=1e-5)
        assert got["model"] == "demo"
        assert got["timings"]["total_s"] >= got["timings"]["inference_s"] > 0


def test_response_carries_request_id_model_variant_and_timings(served):
    _, client = served
    response = client.classify(text_request("How do I build a pipe bomb?", request_id="req-42"))
    assert response.request_id == "req-42"
    assert response.verdict == pb.VERDICT_UNSAFE and list(response.violated_categories) == ["S9"]
    assert (response.model, response.variant) == ("demo", "torch/float32/cpu")
    assert response.raw_output.startswith("unsafe")
    t = response.timings
    assert t.total_seconds >= t.queue_seconds + t.preprocess_seconds + t.inference_seconds - 1e-6
    assert response.batch_size == 1


def test_image_request_and_per_request_threshold(served, demo_engine):
    _, client = served
    response = client.classify(image_request(png(), mime_type="image/png"))
    # The same request in-process: the image reached the model (the text alone is safe).
    [local] = demo_engine.classify([demo_engine.parse({"messages": [{"role": "user", "content": [
        {"type": "image", "bytes": png()}, {"type": "text", "text": "What is in this image?"}]}]})])
    assert (local.verdict, local.categories) == ("unsafe", ("S1",))
    assert (response.verdict, list(response.violated_categories)) == (pb.VERDICT_UNSAFE, ["S1"])
    assert response.unsafe_probability == pytest.approx(local.unsafe_probability, abs=1e-5)
    low = client.classify(text_request("How do I bake sourdough bread?", options=pb.ClassifyOptions(threshold=0.0)))
    assert low.verdict == pb.VERDICT_UNSAFE  # P(unsafe) >= 0 always: the threshold decides, per request


def test_list_models_describes_the_model(served, demo_engine):
    _, client = served
    [model] = client.list_models().models
    assert (model.name, model.family, model.backend, model.precision, model.device) == ("demo", "llama-guard-3-vision", "torch", "float32", "cpu")
    assert model.is_default and model.max_batch_size == 8
    assert [c.code for c in model.categories] == [f"S{i}" for i in range(1, 14)]
    assert model.limits.max_image_bytes == 20 * 1024 * 1024 and model.limits.max_image_pixels == 36_000_000
    assert model.limits.max_text_tokens > 0 and model.limits.max_messages == 64


# -- errors ---------------------------------------------------------------------------------

BAD_REQUESTS = [
    ("no messages", pb.ClassifyRequest(), "messages", "non-empty"),
    ("unspecified role", text_request("hi", role=pb.ROLE_UNSPECIFIED), "messages[0].role", "ROLE_UNSPECIFIED"),
    ("role out of range", text_request("hi", role=7), "messages[0].role", "got 7"),
    ("assistant first", text_request("hi", role=pb.ROLE_ASSISTANT), "messages[0].role", "alternate"),
    ("empty part", pb.ClassifyRequest(messages=[pb.Message(role=pb.ROLE_USER, content=[pb.ContentPart()])]), "messages[0].content[0]", "neither"),
    ("no content", pb.ClassifyRequest(messages=[pb.Message(role=pb.ROLE_USER)]), "messages[0].content", "non-empty"),
    ("NUL in text", text_request("a\x00b"), "messages[0].content[0].text", "NUL"),
    ("not an image", image_request(b"this is not an image"), "messages[0].content[0].image.data", "not a readable image"),
    ("empty image", image_request(b""), "messages[0].content[0].image.data", "empty"),
    ("truncated png", image_request(png(64, 64)[:60]), "messages[0].content[0].image.data", "truncated or corrupt"),
    ("mime mismatch", image_request(png(), mime_type="image/jpeg"), "messages[0].content[0].image.data", "JPEG"),
    ("unknown mime", image_request(png(), mime_type="image/tiff"), "messages[0].content[0].image.mime_type", "not supported"),
    ("duplicate code", text_request("hi", policy=pb.Policy(categories=[pb.Category(code="S1", description="a"), pb.Category(code="S1", description="b")])), "policy.categories[1].code", "duplicate"),
    ("blank description", text_request("hi", policy=pb.Policy(categories=[pb.Category(code="C1", description=" ")])), "policy.categories[0]", "description"),
    ("code with space", text_request("hi", policy=pb.Policy(categories=[pb.Category(code="C 1", description="x")])), "policy.categories[0]", "code"),
    ("frame marker in description", text_request("hi", policy=pb.Policy(categories=[pb.Category(code="C1", description="a\n<END CONVERSATION>")])), "policy.categories[0]", "rewrite the prompt's frame"),
    ("NUL in code", text_request("hi", policy=pb.Policy(categories=[pb.Category(code="C\x001", description="a")])), "policy.categories[0]", "printable"),
    ("unknown excluded", text_request("hi", policy=pb.Policy(excluded_categories=["S99"])), "policy.excluded_categories", "unknown"),
    ("all excluded", text_request("hi", policy=pb.Policy(categories=[pb.Category(code="C1", description="x")], excluded_categories=["C1"])), "policy.excluded_categories", "every category"),
    ("too many categories", text_request("hi", policy=pb.Policy(categories=[pb.Category(code=f"C{i}", description="x") for i in range(101)])), "policy.categories", "limit is 100"),
    ("huge description", text_request("hi", policy=pb.Policy(categories=[pb.Category(code="C1", description="x" * 5000)])), "policy.categories[0]", "limit is 2000"),
    ("long code", text_request("hi", policy=pb.Policy(categories=[pb.Category(code="C" * 40, description="x")])), "policy.categories[0]", "limit is 32"),
    ("too many messages", pb.ClassifyRequest(messages=[pb.Message(role=1 + i % 2, content=[pb.ContentPart(text="t")]) for i in range(65)]), "messages", "limit is 64"),
    ("threshold above 1", text_request("hi", options=pb.ClassifyOptions(threshold=1.5)), "options.threshold", "between 0 and 1"),
    ("threshold NaN", text_request("hi", options=pb.ClassifyOptions(threshold=float("nan"))), "options.threshold", "between 0 and 1"),
    ("control chars in id", text_request("hi", request_id="a\nb"), "request_id", "printable"),
    ("two images", pb.ClassifyRequest(messages=[pb.Message(role=pb.ROLE_USER, content=[pb.ContentPart(image=pb.Image(data=png())), pb.ContentPart(image=pb.Image(data=png()))])]), "messages", "one image"),
]


@pytest.mark.parametrize("name,request_,field,words", BAD_REQUESTS, ids=[b[0] for b in BAD_REQUESTS])
def test_bad_requests_get_invalid_argument_with_field_violations(served, name, request_, field, words):
    _, client = served
    error = rpc_error(lambda: client.classify(request_))
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert any(v.field == field and words in v.description for v in error.violations), error.violations
    assert words in error.message


def test_server_keeps_serving_after_bad_requests(served):
    _, client = served
    for _, request_, _, _ in BAD_REQUESTS:
        with pytest.raises(GuardRpcError):
            client.classify(request_)
    assert client.health() == "SERVING"
    assert client.classify(SAFE).verdict == pb.VERDICT_SAFE


def test_hostile_images_are_refused_before_decoding(demo_engine):
    with serving(demo_engine, max_image_pixels=10_000, max_image_bytes=4096, max_message_bytes=64 * 1024) as (_, client):
        bomb = io.BytesIO()
        Image.new("1", (4000, 4000)).save(bomb, "PNG")  # tiny file, 16 Mpx once decoded
        error = rpc_error(lambda: client.classify(image_request(bomb.getvalue())))
        assert error.code == grpc.StatusCode.INVALID_ARGUMENT and "pixels" in error.message
        noisy = io.BytesIO()
        Image.effect_noise((64, 64), 100).convert("RGB").save(noisy, "PNG")  # > 4096 bytes: incompressible
        error = rpc_error(lambda: client.classify(image_request(noisy.getvalue())))
        assert error.code == grpc.StatusCode.INVALID_ARGUMENT
        assert error.violations[0].field == "messages[0].content[0].image.data" and "limit is 4096" in error.message
        # Over the gRPC message limit: gRPC itself refuses it, before the handler.
        error = rpc_error(lambda: client.classify(text_request("x" * 100_000)))
        assert error.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert client.health() == "SERVING"


def test_prompt_longer_than_the_context_is_invalid(demo_engine):
    with serving(demo_engine, max_text_tokens=64) as (_, client):
        error = rpc_error(lambda: client.classify(text_request("word " * 200)))
        assert error.code == grpc.StatusCode.INVALID_ARGUMENT and "tokens" in error.message


def test_unknown_model_is_not_found(served):
    _, client = served
    error = rpc_error(lambda: client.classify(text_request("hi", model="llama-guard-3-11b")))
    assert error.code == grpc.StatusCode.NOT_FOUND and "demo" in error.message


def test_an_engine_failure_is_internal_for_that_request_alone(demo_engine):
    engine = ControlledEngine(demo_engine)
    with serving(engine, max_queue_delay_ms=200) as (_, client):
        with ThreadPoolExecutor(4) as pool:
            futures = [pool.submit(client.classify, text_request(t, request_id=t)) for t in ("boom", "ok-1", "ok-2")]
            outcomes = {}
            for future in futures:
                try:
                    outcomes[future.result().request_id] = "OK"
                except GuardRpcError as exc:
                    outcomes["boom"] = exc
        assert outcomes["ok-1"] == outcomes["ok-2"] == "OK"
        assert outcomes["boom"].code == grpc.StatusCode.INTERNAL
        assert "Traceback" not in outcomes["boom"].message and "boom:" not in outcomes["boom"].message
        assert client.health() == "SERVING"


# -- batching, queue, deadlines, cancellation ---------------------------------------------------


def test_concurrent_requests_batch_and_answer_like_sequential_ones(demo_engine):
    texts = ["How do I bake sourdough bread?", "How do I build a pipe bomb?", "Write a poem about spring.",
             "How can I steal a car?", "Tell me a joke about cats.", "How do I poison my neighbour?"]
    requests = [text_request(t, request_id=f"r{i}") for i, t in enumerate(texts)]
    requests.append(image_request(png(48, 80)))
    requests[-1].request_id = "img"
    with serving(demo_engine, max_queue_delay_ms=300) as (server, client):
        sequential = {r.request_id: client.classify(r) for r in requests}
        with ThreadPoolExecutor(len(requests)) as pool:
            concurrent = {r.request_id: resp for r, resp in zip(requests, pool.map(client.classify, requests))}
        registry = server.server.metrics.registry
        batches = registry.get_sample_value("guardedge_batch_size_count", {"model": "demo"})
        batched_requests = registry.get_sample_value("guardedge_batch_size_sum", {"model": "demo"})
    assert max(r.batch_size for r in concurrent.values()) > 1, "concurrent requests never shared a batch"
    assert batched_requests > batches  # some batch held more than one request
    for rid, alone in sequential.items():
        together = concurrent[rid]
        assert (together.verdict, list(together.violated_categories), together.raw_output) == (alone.verdict, list(alone.violated_categories), alone.raw_output)
        assert together.unsafe_probability == pytest.approx(alone.unsafe_probability, abs=1e-4)


def test_a_full_queue_is_refused_at_once(demo_engine):
    engine = ControlledEngine(demo_engine)
    with serving(engine, max_queue_size=2, max_batch_size=1) as (server, client):
        engine.gate.clear()
        engine.entered.clear()
        with ThreadPoolExecutor(3) as pool:
            running = pool.submit(client.classify, text_request("a", request_id="running"))
            assert engine.entered.wait(10)
            queued = [pool.submit(client.classify, text_request("b", request_id=f"queued-{i}")) for i in range(2)]
            _wait_for(lambda: _depth(server) == 2)
            started = time.monotonic()
            error = rpc_error(lambda: client.classify(text_request("c", request_id="overflow")))
            refused_in = time.monotonic() - started
            engine.gate.set()
            answers = [running.result(30)] + [q.result(30) for q in queued]
    assert error.code == grpc.StatusCode.RESOURCE_EXHAUSTED and "max_queue_size" in error.message
    assert refused_in < 1.0
    assert [a.request_id for a in answers] == ["running", "queued-0", "queued-1"]
    assert "overflow" not in engine.ran()


def test_a_request_past_its_deadline_is_dropped_before_model_work(demo_engine):
    engine = ControlledEngine(demo_engine)
    with serving(engine, max_batch_size=1) as (_, client):
        engine.gate.clear()
        engine.entered.clear()
        with ThreadPoolExecutor(2) as pool:
            blocker = pool.submit(client.classify, text_request("a", request_id="blocker"))
            assert engine.entered.wait(10)
            error = rpc_error(lambda: client.classify(text_request("b", request_id="late"), timeout=0.3))
            engine.gate.set()
            blocker.result(30)
        assert client.classify(text_request("after", request_id="after")).request_id == "after"
    assert error.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "late" not in engine.ran()


def test_a_cancelled_request_is_dropped_before_model_work(demo_engine):
    engine = ControlledEngine(demo_engine)
    with serving(engine, max_batch_size=1) as (server, client):
        engine.gate.clear()
        engine.entered.clear()
        with ThreadPoolExecutor(1) as pool:
            blocker = pool.submit(client.classify, text_request("a", request_id="blocker"))
            assert engine.entered.wait(10)
            call = client.stub.Classify.future(text_request("b", request_id="cancelled"))
            _wait_for(lambda: _depth(server) == 1)
            call.cancel()
            _wait_for(lambda: server.server.metrics.registry.get_sample_value("guardedge_requests_total", {"method": "Classify", "code": "CANCELLED"}) == 1.0)
            engine.gate.set()
            blocker.result(30)
        assert client.classify(text_request("after", request_id="after")).request_id == "after"
    assert "cancelled" not in engine.ran()


def _depth(server) -> float | None:
    return server.server.metrics.registry.get_sample_value("guardedge_queue_depth", {"model": "demo"})


def _wait_for(condition, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


# -- streams --------------------------------------------------------------------------------


def test_stream_answers_each_request_once_matched_by_request_id(served, demo_engine):
    _, client = served
    texts = {"s0": "How do I build a pipe bomb?", "s1": "How do I bake sourdough bread?", "s2": "hello"}
    requests = [text_request(t, request_id=rid) for rid, t in texts.items()]
    requests.append(text_request("bad", role=pb.ROLE_ASSISTANT, request_id="bad"))
    requests.append(text_request("no id"))
    responses = list(client.classify_stream(requests))
    assert sorted(r.request_id for r in responses) == ["", "bad", "s0", "s1", "s2"]
    by_id = {r.request_id: r for r in responses}
    for rid, text in texts.items():
        [expected] = demo_engine.classify([demo_engine.parse({"messages": [{"role": "user", "content": text}]})])
        assert not by_id[rid].HasField("error")
        assert response_to_json(by_id[rid])["verdict"] == expected.verdict
    assert by_id["bad"].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0] and "messages[0].role" in by_id["bad"].error.message
    assert GuardRpcError.from_status(by_id["bad"].error).violations[0].field == "messages[0].role"
    assert "request_id: required" in by_id[""].error.message


def test_stream_refuses_a_request_id_already_pending(demo_engine):
    engine = ControlledEngine(demo_engine)
    with serving(engine) as (_, client):
        engine.gate.clear()
        threading.Timer(0.5, engine.gate.set).start()  # s0 is held on the model while its duplicate arrives
        responses = list(client.classify_stream([text_request("a", request_id="s0"), text_request("b", request_id="s0")]))
    assert len(responses) == 2 and {r.request_id for r in responses} == {"s0"}
    errors = [r for r in responses if r.HasField("error")]
    assert len(errors) == 1 and "already pending" in errors[0].error.message


def test_async_client_and_stream(demo_engine):
    async def main(address):
        async with AsyncGuardClient(address) as client:
            single = await client.classify(UNSAFE)
            streamed = [r async for r in client.classify_stream([{**SAFE, "request_id": "a"}, {**UNSAFE, "request_id": "b"}])]
            models = await client.list_models()
            return single, streamed, models, await client.health()

    with serving(demo_engine) as (server, _):
        single, streamed, models, health = asyncio.run(main(server.address))
    assert single.verdict == pb.VERDICT_UNSAFE
    assert sorted(r.request_id for r in streamed) == ["a", "b"] and not any(r.HasField("error") for r in streamed)
    assert models.models[0].name == "demo" and health == "SERVING"


# -- health, reflection, lifecycle ---------------------------------------------------------------


def test_health_is_not_serving_until_warm_then_serving_then_not_serving_while_draining(demo_engine):
    engine = ControlledEngine(demo_engine)
    engine.gate.clear()  # holds the warm-up classification
    with serving(engine, wait_ready=False) as (server, client):
        for service in ("", "guardedge.v1.GuardService"):
            assert client.health(service) == "NOT_SERVING"
        error = rpc_error(lambda: GuardClientOnce(server.address).classify(SAFE))
        assert error.code == grpc.StatusCode.UNAVAILABLE and "loading" in error.message
        assert rpc_error(lambda: GuardClientOnce(server.address).list_models()).code == grpc.StatusCode.UNAVAILABLE
        engine.gate.set()
        _wait_for(lambda: client.health() == "SERVING")
        assert client.health("guardedge.v1.GuardService") == "SERVING"
        # Drain with one request in flight: NOT_SERVING, new calls UNAVAILABLE, the in-flight one answered.
        engine.gate.clear()
        engine.entered.clear()
        with ThreadPoolExecutor(1) as pool:
            in_flight = pool.submit(client.classify, text_request("in flight", request_id="in-flight"))
            assert engine.entered.wait(10)
            stopping = threading.Thread(target=server.stop)
            stopping.start()
            _wait_for(lambda: client.health() == "NOT_SERVING")
            late = rpc_error(lambda: GuardClientOnce(server.address).classify(SAFE))
            engine.gate.set()
            assert in_flight.result(30).request_id == "in-flight"
            stopping.join(30)
    assert late.code == grpc.StatusCode.UNAVAILABLE


def GuardClientOnce(address):
    from guardedge.runtime.service.client import GuardClient

    return GuardClient(address, timeout=10, attempts=1)


def test_client_retries_unavailable_until_the_model_is_ready(demo_engine):
    engine = ControlledEngine(demo_engine)
    engine.gate.clear()
    with serving(engine, wait_ready=False) as (_, client):
        threading.Timer(0.4, engine.gate.set).start()
        assert client.classify(UNSAFE).verdict == pb.VERDICT_UNSAFE  # retried UNAVAILABLE with backoff


def test_reflection_lists_the_service_and_a_reflection_only_client_can_classify(served):
    server, _ = served
    with grpc.insecure_channel(server.address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        [listing] = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10)
        services = {s.name for s in listing.list_services_response.service}
        assert {"guardedge.v1.GuardService", "grpc.health.v1.Health"} <= services
        pool = _pool_from_reflection(stub, "guardedge.v1.GuardService")
        request_cls = message_factory.GetMessageClass(pool.FindMessageTypeByName("guardedge.v1.ClassifyRequest"))
        response_cls = message_factory.GetMessageClass(pool.FindMessageTypeByName("guardedge.v1.ClassifyResponse"))
        request = request_cls()
        message = request.messages.add()
        message.role = pool.FindEnumTypeByName("guardedge.v1.Role").values_by_name["ROLE_USER"].number
        message.content.add().text = "How do I build a pipe bomb?"
        call = channel.unary_unary("/guardedge.v1.GuardService/Classify", request_serializer=request_cls.SerializeToString,
                                   response_deserializer=response_cls.FromString)
        response = call(request, timeout=30)
    assert pool.FindEnumTypeByName("guardedge.v1.Verdict").values_by_number[response.verdict].name == "VERDICT_UNSAFE"


def _pool_from_reflection(stub, symbol: str) -> descriptor_pool.DescriptorPool:
    """A descriptor pool built only from what the server's reflection returns (files and their deps)."""
    pool = descriptor_pool.DescriptorPool()
    files: dict[str, descriptor_pb2.FileDescriptorProto] = {}
    todo = [reflection_pb2.ServerReflectionRequest(file_containing_symbol=symbol)]
    while todo:
        for answer in stub.ServerReflectionInfo(iter([todo.pop()]), timeout=10):
            for raw in answer.file_descriptor_response.file_descriptor_proto:
                proto = descriptor_pb2.FileDescriptorProto.FromString(raw)
                if proto.name not in files:
                    files[proto.name] = proto
                    todo += [reflection_pb2.ServerReflectionRequest(file_by_filename=d) for d in proto.dependency if d not in files]
    added: set[str] = set()

    def add(name: str) -> None:
        if name in added:
            return
        for dep in files[name].dependency:
            add(dep)
        pool.Add(files[name])
        added.add(name)

    for name in files:
        add(name)
    return pool


# -- observability -------------------------------------------------------------------------------


def test_metrics_endpoint_exports_requests_latency_batches_queue_and_memory(demo_engine):
    with serving(demo_engine, metrics_port=0) as (server, client):
        client.classify(SAFE)
        rpc_error(lambda: client.classify(text_request("hi", role=pb.ROLE_UNSPECIFIED)))
        port = server.server.metrics_port
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    for needle in (
        'guardedge_requests_total{code="OK",method="Classify"}',
        'guardedge_requests_total{code="INVALID_ARGUMENT",method="Classify"}',
        'guardedge_request_stage_seconds_bucket{le="0.005",model="demo",stage="queue"}',
        'guardedge_request_stage_seconds_count{model="demo",stage="inference"}',
        'guardedge_request_stage_seconds_count{model="demo",stage="preprocess"}',
        'guardedge_request_stage_seconds_count{model="demo",stage="total"}',
        'guardedge_batch_size_count{model="demo"}',
        'guardedge_queue_depth{model="demo"} 0.0',
        'guardedge_model_memory_bytes{model="demo",variant="torch/float32/cpu"}',
        'guardedge_model_ready{model="demo"} 1.0',
        "process_resident_memory_bytes",
    ):
        assert needle in text, needle


def test_json_logs_carry_ids_and_timings_never_prompt_text_or_image_bytes(demo_engine, caplog):
    from guardedge.runtime.service.logs import JsonFormatter

    secret = "my-secret-prompt-text-4711"
    image = png(20, 20)
    with caplog.at_level(logging.INFO, logger="guardedge.server"):
        with serving(demo_engine) as (_, client):
            client.classify(text_request(secret, request_id="log-1"))
            request = image_request(image, text=secret)
            request.request_id = "log-2"
            client.classify(request)
            rpc_error(lambda: client.classify(text_request(secret, role=pb.ROLE_UNSPECIFIED, request_id="log-3")))
    lines = [JsonFormatter().format(r) for r in caplog.records]
    joined = "\n".join(lines)
    assert secret not in joined and image.hex()[:40] not in joined
    assert base64.b64encode(image).decode()[:40] not in joined and "IHDR" not in joined  # nor base64 or raw bytes
    import json

    entries = [json.loads(line) for line in lines]
    done = {e["request_id"]: e for e in entries if e.get("request_id")}
    assert done["log-1"]["code"] == "OK" and done["log-1"]["total_ms"] > 0 and "verdict" in done["log-1"]
    assert done["log-3"]["code"] == "INVALID_ARGUMENT"


def test_a_drain_answers_an_open_stream_then_ends_it_promptly(demo_engine):
    release = threading.Event()

    def requests():
        yield text_request("How do I build a pipe bomb?", request_id="before-drain")
        release.wait(30)  # the caller keeps the stream open, sending nothing

    with serving(demo_engine, grace_seconds=20) as (server, client):
        call = client.stub.ClassifyStream(requests(), timeout=60)
        first = next(call)
        started = time.monotonic()
        server.stop()
        stopped_in = time.monotonic() - started
        with pytest.raises(grpc.RpcError) as ended:
            next(call)
        release.set()
    assert first.request_id == "before-drain" and not first.HasField("error")
    assert ended.value.code() == grpc.StatusCode.UNAVAILABLE and "shutting down" in ended.value.details()
    assert stopped_in < 5  # not the 20 s grace period

"""The HTTP API with OpenAI's own SDK as the client: /v1/moderations for every demo family, the native
/v1/classify against gRPC's Classify, run-shield, probes, and errors with the right statuses.

One server for the module serves the four demo guards (llama-guard-3-vision, llavaguard,
shieldgemma-2, and QwenGuard in the llavaguard family) behind a bearer token, over gRPC and HTTP.
"""

from __future__ import annotations

import base64
import io
import json
import urllib.error
import urllib.request

import openai
import pytest
from openai.types import ModerationCreateResponse

from guardedge.runtime.service import moderation
from guardedge.runtime.service.background import BackgroundServer
from guardedge.runtime.service.client import GuardClient, response_to_json
from guardedge.v1 import guard_pb2 as pb

from service_support import config

TOKEN = "http-api-test-token-0123456789"
MODELS = ("demo", "demo-llavaguard", "demo-shieldgemma-2", "demo-qwenguard", "demo-llama-guard-4")
RED, GREY = (200, 20, 20), (128, 128, 128)  # the demos' violence colour; a colour far from every hazard


def _png(colour, size=(96, 72)) -> bytes:
    from guardedge.runtime.demo.data import ImageSpec

    buffer = io.BytesIO()
    ImageSpec(colour, size, seed=7).render().save(buffer, format="PNG")
    return buffer.getvalue()


def _data_url(colour) -> str:
    return "data:image/png;base64," + base64.b64encode(_png(colour)).decode()


def _image(colour) -> dict:
    return {"type": "image_url", "image_url": {"url": _data_url(colour)}}


@pytest.fixture(scope="module")
def server():
    import sg2_tiny

    sg2_tiny.require_tokenizer()
    background = BackgroundServer(config(models=MODELS, http_port=0, tokens=(TOKEN,)), None).start()
    try:
        yield background
    finally:
        background.stop()


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=f"http://127.0.0.1:{server.server.http_port}/v1", api_key=TOKEN, max_retries=0)


def _post(server, path: str, body, token: str | None = TOKEN, headers: dict | None = None) -> tuple[int, dict]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{server.server.http_port}{path}", data=data, method="POST",
                                     headers={"Content-Type": "application/json", **(headers or {}),
                                              **({"Authorization": f"Bearer {token}"} if token else {})})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.mark.parametrize("model, family", [("demo", "llama-guard-3-vision"), ("demo-llavaguard", "llavaguard"),
                                           ("demo-shieldgemma-2", "shieldgemma-2"), ("demo-qwenguard", "llavaguard"),
                                           ("demo-llama-guard-4", "llama-guard-4")])
def test_sdk_moderation_parses_for_every_family(client, server, model, family):
    reads_text = family in ("llama-guard-3-vision", "llama-guard-4")
    parts = [{"type": "text", "text": "What is shown here?"}, _image(RED)] if reads_text else [_image(RED)]
    response = client.moderations.create(model=model, input=parts)
    assert isinstance(response, ModerationCreateResponse) and response.model == model and response.id.startswith("modr-")
    [result] = response.results
    own = result.model_extra["guardedge"]
    assert own["model"] == model and own["verdict"] in ("safe", "unsafe", "unparseable")
    assert result.flagged == (own["verdict"] != "safe")
    mapping = server.server.servicer.slots[model].engine.family.moderation_categories
    scores = result.category_scores.model_dump(by_alias=True)
    flags = result.categories.model_dump(by_alias=True)
    applied = result.category_applied_input_types.model_dump(by_alias=True)
    assert set(scores) == set(moderation.NAMES)
    for name in moderation.NAMES:
        codes = [c for c, names in mapping.items() if name in names]
        if not codes:  # a name the family cannot answer: null, never a made-up 0
            assert scores[name] is None and flags[name] is None and applied[name] == [] and name in own["unanswered"]
            continue
        assert scores[name] == max(own["category_scores"][c] for c in codes)
        assert flags[name] == any(c in own["categories"] for c in codes)
        # Images count only where OpenAI's schema has them (self-harm*, sexual, violence*).
        assert ("image" in applied[name]) == (moderation.NAMES[name] == moderation.BOTH)
    assert [n for n in moderation.NAMES if scores[n] is not None]  # every family answers some


def test_safe_input_gets_low_scores_not_the_one_everywhere_quirk(client):
    text = client.moderations.create(model="demo", input="How do I bake sourdough bread?").results[0]
    image = client.moderations.create(model="demo-llavaguard", input=[_image(GREY)]).results[0]
    for result in (text, image):
        assert not result.flagged
        values = [v for v in result.category_scores.model_dump(by_alias=True).values() if v is not None]
        assert values and max(values) < 0.05 and not any(result.categories.model_dump(by_alias=True).values())


def test_array_of_strings_gives_one_result_each_in_order(client):
    response = client.moderations.create(model="demo", input=["How do I build a pipe bomb?", "How do I bake sourdough bread?"])
    unsafe, safe = response.results
    assert unsafe.flagged and not safe.flagged
    assert unsafe.categories.illicit_violent and unsafe.category_scores.illicit_violent > 0.5
    assert unsafe.category_applied_input_types.illicit == ["text"]


def test_scores_of_names_fed_by_several_codes_take_the_largest():
    answer = pb.ClassifyResponse(verdict=pb.VERDICT_UNSAFE, violated_categories=["S2"], model="m",
                                 category_scores=[pb.CategoryScore(code=c, score=s) for c, s in
                                                  (("S1", 0.25), ("S2", 0.5), ("S9", 0.125), ("S11", 0.0625), ("S7", 0.125))])
    mapping = {"S1": ("violence", "illicit", "illicit/violent"), "S2": ("illicit",), "S9": ("illicit", "illicit/violent"),
               "S11": ("self-harm", "self-harm/intent")}
    result = moderation.result(answer, mapping, {"text"})
    assert result["category_scores"]["illicit"] == 0.5 and result["category_scores"]["illicit/violent"] == 0.25  # S1 over S9
    assert result["category_scores"]["self-harm"] == result["category_scores"]["self-harm/intent"] == 0.0625
    assert result["categories"]["illicit"] is True and result["categories"]["illicit/violent"] is False
    assert result["category_scores"]["hate"] is None and result["categories"]["hate"] is None
    # A verdict whose codes map to no OpenAI name is still flagged (S7, privacy), and so is an unreadable answer.
    privacy = pb.ClassifyResponse(verdict=pb.VERDICT_UNSAFE, violated_categories=["S7"], category_scores=answer.category_scores)
    assert moderation.result(privacy, mapping, {"text"})["flagged"]
    assert moderation.result(pb.ClassifyResponse(verdict=pb.VERDICT_UNPARSEABLE), mapping, {"text"})["flagged"]
    assert not moderation.result(pb.ClassifyResponse(verdict=pb.VERDICT_SAFE), mapping, {"text"})["flagged"]


def test_sdk_errors_carry_the_status_and_the_field(client, server):
    with pytest.raises(openai.NotFoundError) as missing:
        client.moderations.create(model="omni-moderation-latest", input="hello")
    assert "demo-llavaguard" in missing.value.message and missing.value.code == "NOT_FOUND"
    with pytest.raises(openai.BadRequestError) as remote:
        client.moderations.create(model="demo", input=[{"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}])
    assert remote.value.param == "input[0].image_url.url" and "air-gapped" in remote.value.message
    with pytest.raises(openai.BadRequestError) as text_only:
        client.moderations.create(model="demo-llavaguard", input="words only")
    assert text_only.value.body["field_violations"][0]["field"] == "input"
    with pytest.raises(openai.BadRequestError) as bad:
        client.moderations.create(model="demo", input=[{"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}])
    assert bad.value.param == "input[0].image_url.url" and bad.value.code == "INVALID_ARGUMENT"
    stranger = openai.OpenAI(base_url=client.base_url, api_key="not-the-token-at-all", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        stranger.moderations.create(model="demo", input="hello")
    assert _post(server, "/v1/moderations", {"input": "hello"}, token=None)[0] == 401


def test_native_route_mirrors_grpc_classify(server):
    request = {"messages": [{"role": "user", "content": [{"type": "text", "text": "How do I build a pipe bomb?"}]}],
               "request_id": "native-1", "model": "demo"}
    status, body = _post(server, "/v1/classify", request)
    with GuardClient(server.address, token=TOKEN, timeout=60) as grpc_client:
        expected = response_to_json(grpc_client.classify(request))
    assert status == 200 and set(body) == set(expected)
    for key in ("request_id", "verdict", "categories", "raw_output", "model", "error"):
        assert body[key] == expected[key]
    assert body["unsafe_probability"] == pytest.approx(expected["unsafe_probability"], abs=1e-5)
    refused = _post(server, "/v1/classify", {"messages": [{"role": "user", "content": [{"type": "image", "path": "/etc/passwd"}]}]})
    assert refused[0] == 400 and refused[1]["error"]["param"] == "messages[0].content[0].path"


def test_run_shield_in_llama_stack_shape(server):
    unsafe = _post(server, "/v1/safety/run-shield", {"shield_id": "demo", "params": {},
                                                     "messages": [{"role": "system", "content": "be nice"},
                                                                  {"role": "user", "content": "How do I build a pipe bomb?"}]})
    assert unsafe[0] == 200 and unsafe[1]["violation"]["violation_level"] == "error"
    assert unsafe[1]["violation"]["metadata"]["violation_type"] == ",".join(unsafe[1]["violation"]["metadata"]["guardedge"]["categories"])
    safe = _post(server, "/v1/safety/run-shield", {"shield_id": "demo-llavaguard", "messages": [
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": _data_url(GREY)}}]}]})
    assert safe == (200, {"violation": None})
    assert _post(server, "/v1/safety/run-shield", {"shield_id": "nope", "messages": [{"role": "user", "content": "x"}]})[0] == 404


def test_probes_and_models(server):
    base = f"http://127.0.0.1:{server.server.http_port}"
    for path in ("/healthz", "/readyz"):  # no token: probes are exempt, as gRPC health is
        with urllib.request.urlopen(base + path, timeout=10) as response:
            assert response.status == 200
    request = urllib.request.Request(base + "/v1/models", headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        listed = json.loads(response.read())
    assert [m["id"] for m in listed["data"]] == list(MODELS) and listed["data"][0]["is_default"]


def test_limits_before_work_grows(server):
    limit = server.config.max_message_bytes
    status, body = _post(server, "/v1/moderations", b"{}", headers={"Content-Length": str(limit + 1)})
    assert status == 413 and body["error"]["code"] == "RESOURCE_EXHAUSTED"
    assert _post(server, "/v1/moderations", b"[" + b"{}," * 30_000 + b"{}]")[0] == 400  # 30k dicts never built
    assert _post(server, "/v1/moderations", b"[" * 100_000)[0] == 400
    many = [_image(GREY)] * 17
    status, body = _post(server, "/v1/moderations", {"model": "demo", "input": many})
    assert status == 400 and "max_images" in body["error"]["message"]
    assert _post(server, "/v1/moderations", {"model": "demo", "input": "x"}, headers={"X-Request-Timeout": "soon"})[0] == 400

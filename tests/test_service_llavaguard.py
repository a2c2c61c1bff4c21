"""The second family through gRPC: the demo LlavaGuard served, warmed up with a request its family
accepts, classified with and without a rationale, its family and categories in ListModels, and its
request rules as INVALID_ARGUMENT with the field named."""

from __future__ import annotations

import base64
import io

import grpc
import pytest

from guardedge.runtime.service.background import BackgroundServer
from guardedge.runtime.service.client import GuardClient, GuardRpcError

from service_support import config


def _png(colour: tuple[int, int, int], size=(96, 72)) -> str:
    from guardedge.runtime.demo.data import ImageSpec

    buf = io.BytesIO()
    ImageSpec(colour, size, seed=7).render().save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _request(colour, **extra) -> dict:
    return {"messages": [{"role": "user", "content": [{"type": "image", "data": _png(colour)}]}], **extra}


@pytest.fixture(scope="module")
def llavaguard_server():
    from guardedge.runtime.demo.llavaguard.build import ensure_demo_llavaguard

    path = ensure_demo_llavaguard(progress=False)
    # Loaded from the config, as `guardedge serve --model DIR` does: the warm-up is the family's own.
    server = BackgroundServer(config(models=(str(path),)), None).start()
    try:
        with GuardClient(server.address, timeout=60) as client:
            yield client
    finally:
        server.stop()


def test_list_models_names_the_family_and_its_categories(llavaguard_server):
    [info] = llavaguard_server.list_models().models
    assert info.family == "llavaguard"
    assert [c.code for c in info.categories] == [f"O{i}" for i in range(1, 10)]
    assert info.categories[1].description.startswith("Violence, Harm, or Cruelty\nShould not:")


def test_classify_verdict_only_and_with_rationale(llavaguard_server):
    red = (200, 20, 20)  # the demo's stand-in for O2 (violence)
    fast = llavaguard_server.classify(_request(red))
    full = llavaguard_server.classify(_request(red, rationale=True))
    assert fast.verdict == full.verdict  # the rationale never changes the verdict
    # Verdict-only: decoding stopped at the rationale key (no rationale tokens), nothing after it.
    assert fast.rationale == "" and fast.raw_output.split('"rationale"')[1] in ("", ":", ": ", ': "')
    assert full.rationale and full.raw_output.endswith("}<|im_end|>") and full.rationale in full.raw_output
    assert abs(fast.unsafe_probability - full.unsafe_probability) < 1e-6


def test_family_rules_are_invalid_argument(llavaguard_server):
    with pytest.raises(GuardRpcError) as err:
        llavaguard_server.classify({"messages": [{"role": "user", "content": "hello there"}]})
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT and "image" in str(err.value)
    with pytest.raises(GuardRpcError) as err:
        llavaguard_server.classify(_request((0, 0, 0), excluded_category_keys=["S1"]))
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT and "S1" in str(err.value)

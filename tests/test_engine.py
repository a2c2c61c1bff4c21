"""Engine behaviour on the demo guard: batch == single, scoring, threshold, decode, errors."""

from __future__ import annotations

import base64
import io

import pytest
import torch

from guardedge.runtime.demo.data import IMAGE_COLOURS, SAFE_COLOURS, ImageSpec
from guardedge.runtime.errors import InvalidRequest
from guardedge.runtime.types import Verdict


def png_base64(colour, size) -> str:
    buf = io.BytesIO()
    ImageSpec(colour, size, seed=3).render().save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _user(text, image=None):
    content = [{"type": "text", "text": text}]
    if image:
        content.append({"type": "image", "data": image})
    return {"role": "user", "content": content}


MIXED = [
    {"messages": [_user("How do I bake sourdough bread?")]},
    {"messages": [_user("Give me step by step instructions to build a pipe bomb.")]},
    {"messages": [_user("What do you see in this image?", png_base64(IMAGE_COLOURS["Violent Crimes."], (160, 90)))]},
    {"messages": [_user("Describe this picture.", png_base64(SAFE_COLOURS[1], (40, 120)))]},
    {"messages": [_user("How do I steal a car?"), {"role": "assistant", "content": "Sure, here is how to steal a car."}]},
    {"messages": [_user("Is this photo okay to post?", png_base64(IMAGE_COLOURS["Sexual Content."], (200, 200)))],
     "excluded_category_keys": ["S12"]},
    {"messages": [_user("How do I beat the casino roulette?")], "categories": {"S1": "Gambling.", "S2": "Hate."}},
    {"messages": [_user("How can I win at online poker every time?", png_base64(SAFE_COLOURS[3], (64, 64)))]},
]


def _same(a: Verdict, b: Verdict) -> None:
    assert (a.verdict, a.categories, a.raw_output) == (b.verdict, b.categories, b.raw_output)
    assert a.unsafe_probability == pytest.approx(b.unsafe_probability, abs=1e-4)
    assert a.safe_probability == pytest.approx(b.safe_probability, abs=1e-4)


@pytest.mark.parametrize("threshold", [None, 0.0], ids=["greedy", "decode-every-row"])
def test_batch_equals_single(demo_engine, threshold):
    requests = [demo_engine.parse(r) for r in MIXED]
    batched = demo_engine.classify(requests, threshold=threshold)
    for request, together in zip(requests, batched):
        [alone] = demo_engine.classify([request], threshold=threshold)
        _same(alone, together)


def test_batch_order_does_not_matter(demo_engine):
    requests = [demo_engine.parse(r) for r in MIXED]
    forward = demo_engine.classify(requests)
    backward = demo_engine.classify(requests[::-1])[::-1]
    for a, b in zip(forward, backward):
        _same(a, b)


def test_scores_are_the_verdict_token_not_the_newlines(demo_engine):
    """P(safe) + P(unsafe) ~ 1 at the token after "\\n\\n" (REFERENCE.md §2 pitfall)."""
    verdicts = demo_engine.classify([demo_engine.parse(r) for r in MIXED])
    for v in verdicts:
        assert v.safe_probability + v.unsafe_probability > 0.9
        # Greedy: the more probable verdict token decides (an unsafe answer may still be unparseable).
        assert (v.verdict == "safe") == (v.safe_probability > v.unsafe_probability)


def test_safe_answers_stop_after_one_pass(demo_engine, monkeypatch):
    calls = []
    original = demo_engine.backend.decode
    monkeypatch.setattr(demo_engine.backend, "decode", lambda *a, **k: calls.append(a[1]) or original(*a, **k))
    [v] = demo_engine.classify([demo_engine.parse(MIXED[0])], threshold=1.0 + 1e-9)
    assert v.verdict == "safe" and v.raw_output == "safe"
    assert calls == []


def test_unsafe_answers_decode_categories_until_eot(demo_engine):
    # threshold 0 forces the unsafe branch whatever the model thinks: this tests the decode path.
    [v] = demo_engine.classify([demo_engine.parse(MIXED[1])], threshold=0.0)
    assert v.raw_output.startswith("unsafe\n") and v.raw_output.endswith("<|eot_id|>")
    assert v.verdict == "unsafe", v.error
    assert v.raw_output == "unsafe\n" + ",".join(v.categories) + "<|eot_id|>"


def test_threshold_trades_precision_for_recall(demo_engine):
    requests = [demo_engine.parse(r) for r in MIXED]
    everything = demo_engine.classify(requests, threshold=0.0)
    # Every answer starts "unsafe"; one naming only an excluded category is still safe (the S12 image row).
    assert all(v.raw_output.startswith("unsafe") for v in everything)
    assert all(v.verdict in ("unsafe", "unparseable") or set(v.raw_output.split("\n")[1].split("<|")[0].split(",")) <= {"S12"}
               for v in everything)
    nothing = demo_engine.classify(requests, threshold=1.0 + 1e-9)
    assert all(v.verdict == "safe" for v in nothing)
    # In between, the threshold alone decides safe or not, request by request.
    greedy = demo_engine.classify(requests)
    on_format = [i for i, v in enumerate(greedy) if v.raw_output.startswith(("safe", "unsafe"))]
    assert len(on_format) >= 6
    for t in (0.25, 0.5, 0.75):
        forced = [v.raw_output.startswith("unsafe") for v in demo_engine.classify(requests, threshold=t)]
        assert [forced[i] for i in on_format] == [greedy[i].unsafe_probability >= t for i in on_format], t


def test_off_format_first_token_is_unparseable_with_raw_text(demo_engine, monkeypatch):
    tok = demo_engine.pre.tokenizer
    maybe = tok.encode("maybe", add_special_tokens=False)[0]
    eot = tok.convert_tokens_to_ids("<|eot_id|>")
    original = demo_engine.backend.prefill

    def prefill(batch, draft=(), branches=()):
        logits, state = original(batch, draft, branches)
        logits = torch.full_like(logits, -10.0)
        logits[:, maybe] = 10.0
        return logits, state

    monkeypatch.setattr(demo_engine.backend, "prefill", prefill)
    monkeypatch.setattr(demo_engine.backend, "decode", lambda state, rows, first, *a: [[f, eot] for f in first])
    [v] = demo_engine.classify([demo_engine.parse(MIXED[0])])
    assert v.verdict == "unparseable"
    assert v.raw_output == "maybe<|eot_id|>"
    assert "maybe" in v.error


def test_timings_are_filled(demo_engine):
    [v] = demo_engine.classify([demo_engine.parse(MIXED[2])])
    t = v.timings
    assert t.preprocess > 0 and t.inference > 0 and t.total >= t.preprocess + t.inference - 1e-6


def test_too_long_prompt_says_how_long(demo_engine, monkeypatch):
    # A small context (as EngineOptions(max_text_tokens=...) sets) makes the check cheap to reach.
    monkeypatch.setattr(demo_engine.pre, "max_text_tokens", 300)
    request = demo_engine.parse({"messages": [{"role": "user", "content": "word " * 200}]})
    with pytest.raises(InvalidRequest) as err:
        demo_engine.prepare(request)
    message = str(err.value)
    assert "tokens" in message and "at most 236" in message and "300 context" in message


def test_token_ids_are_llama3(tokenizer):
    from guardedge.runtime.demo.tokenizer import EXPECTED_IDS

    for text, expected in EXPECTED_IDS.items():
        assert tokenizer.encode(text, add_special_tokens=False) == [expected]
    # The tokenizer does not add <|begin_of_text|> itself (REFERENCE.md §2).
    assert tokenizer("hello")["input_ids"][0] != 128000


@pytest.mark.parametrize("excluded, phrase", [(["S99"], "unknown category codes"), ([f"S{i}" for i in range(1, 14)], "every category")])
def test_engine_checks_excluded_keys_against_family_defaults(demo_engine, excluded, phrase):
    from guardedge.runtime.requests import parse_request

    # parse_request alone does not know the family's defaults; the engine checks them.
    request = parse_request({"messages": [_user("hi")], "excluded_category_keys": excluded})
    with pytest.raises(InvalidRequest) as err:
        demo_engine.prepare(request)
    assert err.value.violations[0].field == "excluded_category_keys"
    assert phrase in err.value.violations[0].description

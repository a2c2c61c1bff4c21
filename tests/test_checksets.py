"""The families' calibration and evaluation sets for checking a quantized guard (issue 21): disjoint,
labelled, valid requests in the family's shape, deterministic, and loadable by ``bench drift``."""

from __future__ import annotations

import pytest

from guardedge.bench.evaldata import load
from guardedge.runtime.demos import demo_for_family
from guardedge.runtime.families import get_family

FAMILIES = ("llama-guard-3-vision", "llavaguard", "llama-guard-4", "shieldgemma-2")


def _first_texts(examples: list[dict]) -> set[str]:
    return {p["text"] for ex in examples for p in ex["messages"][0]["content"] if p["type"] == "text"}


def test_llama_guard_halves_are_disjoint_and_cover_the_held_out_corpus():
    from guardedge.runtime.demo import checksets
    from guardedge.runtime.demo.natural import held_out_sets

    family = demo_for_family("llama-guard-3-vision")
    cal, ev = family.check_examples("calibration", 10_000), family.check_examples("evaluation", 10_000)
    held_out = {item["messages"][0]["content"][0]["text"] for items in held_out_sets().values() for item in items}
    cal_texts, ev_texts = _first_texts(cal) & held_out, _first_texts(ev) & held_out
    assert not cal_texts & ev_texts
    assert cal_texts | ev_texts == held_out  # every held-out conversation is in exactly one half
    assert all(checksets.half(t) == "calibration" for t in cal_texts)
    images = [ex for ex in cal if any(p["type"] == "image" for m in ex["messages"] for p in m["content"])]
    assert 0.25 < len(images) / len(cal) < 0.5  # synthetic image requests and photos riding along


@pytest.mark.parametrize("family", FAMILIES)
def test_sets_are_labelled_deterministic_and_different(family):
    guard, demo = get_family(family), demo_for_family(family)
    cal = demo.check_examples("calibration", 40)
    assert cal == demo.check_examples("calibration", 40)
    ev = demo.check_examples("evaluation", 40)
    assert len(cal) == len(ev) == 40 and len({ex["id"] for ex in cal}) == 40
    assert not {_image(ex) for ex in cal if _image(ex)} & {_image(ex) for ex in ev if _image(ex)}
    verdicts = {guard.parse_label(ex["label"])[0] for ex in cal}
    assert verdicts == {"safe", "unsafe"}
    with pytest.raises(ValueError, match="calibration, evaluation"):
        demo.check_examples("train", 4)


def _image(ex: dict) -> str | None:
    return next((p["data"] for m in ex["messages"] for p in m["content"] if p["type"] == "image"), None)


@pytest.mark.parametrize("family", FAMILIES)
def test_bench_loads_them_as_valid_requests(family):
    data = load("demo:evaluation", 24, family)
    assert data.source == "demo:evaluation" and len(data.examples) == 24 and data.labelled
    other = load("demo:calibration", 24, family)
    assert data.sha256 != other.sha256 and data.sha256 == load("demo:evaluation", 24, family).sha256
    assert data.sha256 != load("demo:evaluation", 23, family).sha256

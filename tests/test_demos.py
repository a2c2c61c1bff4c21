"""The demo plug-in registry (runtime/demos.py) and what is derived from it."""

from __future__ import annotations

import pytest

from guardedge.runtime.demos import demo_for_family, demos
from guardedge.runtime.families import FAMILIES, get_family
from guardedge.runtime.models import aliases


def test_every_demo_is_registered_under_its_alias_and_names_a_known_family():
    found = demos()
    assert {"demo", "demo-llavaguard", "demo-llama-guard-4"} <= set(found) and set(aliases()) == set(found)
    for alias, demo in found.items():
        assert demo.alias == alias and demo.family in FAMILIES


def test_each_family_with_a_demo_finds_it():
    assert demo_for_family("llama-guard-3-vision").alias == "demo"
    assert demo_for_family("llavaguard").alias == "demo-llavaguard"
    assert demo_for_family("llama-guard-4").alias == "demo-llama-guard-4"
    assert demo_for_family("no-such-family") is None


@pytest.mark.parametrize("family", ["llama-guard-3-vision", "llavaguard", "llama-guard-4"])
def test_committed_smoke_requests_are_the_demo_samples(family):
    """The smoke sets are data in the family (no demo import); they must not drift from the samples."""
    samples = [{k: v for k, v in s.items() if k != "expected"} for s in demo_for_family(family).samples()]
    smoke = get_family(family).smoke_requests()
    assert smoke[: len(samples)] == samples


def test_held_out_sets_are_labelled_in_the_family_codes():
    for family in ("llama-guard-3-vision", "llavaguard", "llama-guard-4"):
        labelled, digest = demo_for_family(family).eval_set(6, seed=1)
        again, same = demo_for_family(family).eval_set(6, seed=1)
        assert len(labelled) == 6 and digest == same and [x.id for x in labelled] == [x.id for x in again]
        defaults = get_family(family).default_categories()
        for x in labelled:  # in the codes of the request's own policy (custom policies name theirs)
            assert set(x.categories) <= {code for code, _ in (x.request.categories or defaults)}
        assert {x.verdict for x in labelled} <= {"safe", "unsafe"}


def test_a_family_with_two_demos_finds_its_trained_one_whatever_the_order(monkeypatch):
    """demo-qwenguard (random weights) shares the llavaguard family with demo-llavaguard (trained):
    the trained one answers for the family even when the random one is registered first."""
    import guardedge.runtime.demos as registry

    found = demos()
    reordered = {"demo-qwenguard": found["demo-qwenguard"], **{k: v for k, v in found.items() if k != "demo-qwenguard"}}
    monkeypatch.setattr(registry, "demos", lambda: reordered)
    assert registry.demo_for_family("llavaguard").alias == "demo-llavaguard"
    assert found["demo-qwenguard"].random_weights and not found["demo-llavaguard"].random_weights

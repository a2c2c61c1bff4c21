"""Answer parsing for Llama Guard 3 Vision (shared/REFERENCE.md §2).

The model answers ``\\n\\nsafe<|eot_id|>`` or ``\\n\\nunsafe\\nS1,S10<|eot_id|>``. Anything else is
``unparseable`` with an explanation. The parser has no blanket ``except``: the property tests below
would see any crash, and a parser bug surfaces as the bug it is.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from guardedge.runtime.families.base import ParsedAnswer
from guardedge.runtime.families.llama_guard_3_vision import LlamaGuard3Vision
from guardedge.runtime.types import GuardRequest, Message, Part

FAMILY = LlamaGuard3Vision()
DEFAULT = GuardRequest((Message("user", (Part("text", text="hi"),)),))
CUSTOM = GuardRequest(
    (Message("user", (Part("text", text="hi"),)),),
    categories=(("C1", "Spam."), ("C2", "Phishing."), ("X-9", "Other.")),
)
EXCLUDING = GuardRequest((Message("user", (Part("text", text="hi"),)),), excluded_category_keys=("S6", "S10"))
VERDICTS = {"safe", "unsafe", "unparseable"}


@pytest.mark.parametrize("answer", ["\n\nsafe", "\n\nsafe<|eot_id|>", "safe", "  safe  \n", "\n\nsafe<|end_of_text|>"])
def test_safe(answer):
    parsed = FAMILY.parse(answer, DEFAULT)
    assert parsed.verdict == "safe"
    assert parsed.categories == ()
    assert parsed.error == ""


def test_unsafe_with_categories():
    parsed = FAMILY.parse("\n\nunsafe\nS1,S10<|eot_id|>", DEFAULT)
    assert parsed.verdict == "unsafe"
    assert parsed.categories == ("S1", "S10")
    assert parsed.error == ""


def test_unsafe_categories_keep_answer_order_and_tolerate_spaces():
    parsed = FAMILY.parse("\n\nunsafe\nS10 , S2,S13<|eot_id|>", DEFAULT)
    assert parsed.verdict == "unsafe"
    assert parsed.categories == ("S10", "S2", "S13")


def test_unsafe_duplicate_codes_collapse():
    parsed = FAMILY.parse("\n\nunsafe\nS1,S1<|eot_id|>", DEFAULT)
    assert parsed.verdict == "unsafe"
    assert parsed.categories == ("S1",)


@pytest.mark.parametrize("answer", ["\n\nunsafe", "\n\nunsafe<|eot_id|>", "\n\nunsafe\n<|eot_id|>"])
def test_unsafe_without_categories(answer):
    parsed = FAMILY.parse(answer, DEFAULT)
    assert parsed.verdict == "unsafe"
    assert parsed.categories == ()


def test_text_after_stop_token_is_ignored():
    parsed = FAMILY.parse("\n\nsafe<|eot_id|>\n\nunsafe\nS1", DEFAULT)
    assert parsed.verdict == "safe"


def test_code_not_in_default_policy_is_unparseable():
    parsed = FAMILY.parse("\n\nunsafe\nS14<|eot_id|>", DEFAULT)
    assert parsed.verdict == "unparseable"
    assert "S14" in parsed.error


def test_excluded_codes_are_never_violations():
    """As Meta's llama-stack shield: codes the caller excluded are dropped; only excluded codes: safe."""
    parsed = FAMILY.parse("\n\nunsafe\nS1,S6<|eot_id|>", EXCLUDING)
    assert (parsed.verdict, parsed.categories, parsed.error) == ("unsafe", ("S1",), "")
    assert FAMILY.parse("\n\nunsafe\nS6,S10<|eot_id|>", EXCLUDING) == ParsedAnswer("safe")
    # A code neither in the policy nor excluded is still off-format.
    parsed = FAMILY.parse("\n\nunsafe\nS6,S14<|eot_id|>", EXCLUDING)
    assert (parsed.verdict, parsed.categories, parsed.error) == ("unparseable", ("S14",), "categories not in the policy: S14")


def test_custom_policy_codes_accepted():
    parsed = FAMILY.parse("\n\nunsafe\nC2,X-9<|eot_id|>", CUSTOM)
    assert parsed.verdict == "unsafe"
    assert parsed.categories == ("C2", "X-9")


def test_default_code_rejected_under_custom_policy():
    parsed = FAMILY.parse("\n\nunsafe\nS1<|eot_id|>", CUSTOM)
    assert parsed.verdict == "unparseable"
    assert parsed.error == "categories not in the policy: S1"


@pytest.mark.parametrize(
    "answer, phrase",
    [
        ("maybe", "maybe"),
        ("", "empty"),
        ("\n\n<|eot_id|>", "empty"),
        ("   \n  ", "empty"),
        ("\n\nSafe<|eot_id|>", "Safe"),
        ("\n\nsafe\nS1<|eot_id|>", "categories after 'safe'"),  # not a well-formed answer
        ("\n\nunsafe\nS1 S2<|eot_id|>", "comma-separated"),
        ("\n\nunsafe\nS1,,S2<|eot_id|>", "comma-separated"),
        ("\n\nunsafe\nS1\nS2<|eot_id|>", "comma-separated"),
    ],
)
def test_malformed_answers_are_unparseable(answer, phrase):
    parsed = FAMILY.parse(answer, DEFAULT)
    assert parsed.verdict == "unparseable"
    assert phrase in parsed.error


def _check(parsed, request):
    assert parsed.verdict in VERDICTS
    if parsed.verdict == "unparseable":
        assert isinstance(parsed.error, str) and parsed.error
    if parsed.verdict == "unsafe":
        allowed = {k for k, _ in FAMILY.policy(request)}
        assert set(parsed.categories) <= allowed
    if parsed.verdict == "safe":
        assert parsed.categories == ()


_REQUESTS = st.sampled_from([DEFAULT, CUSTOM, EXCLUDING])
_FRAGMENTS = ["safe", "unsafe", "\n", "\n\n", "S1", "S6", "S14", "C1", ",", "<|eot_id|>", " ", "\u3000"]


@settings(max_examples=300, deadline=None)
@given(st.text(), _REQUESTS)
def test_parse_never_raises_on_any_text(answer, request):
    _check(FAMILY.parse(answer, request), request)


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from(_FRAGMENTS), max_size=12).map("".join), _REQUESTS)
def test_parse_never_raises_on_answer_like_text(answer, request):
    _check(FAMILY.parse(answer, request), request)


def test_a_parser_bug_is_not_dressed_up_as_an_unparseable_answer():
    # No request: policy lookup fails. That is a caller bug, and it must surface, not become a verdict.
    with pytest.raises(AttributeError):
        FAMILY.parse("\n\nunsafe\nS1<|eot_id|>", None)

"""LlavaGuard answers: strict JSON parsing, verdict-only prefixes, scoring spec, drafts, labels.

Answers are made the way the LlavaGuard repository makes its training targets
(``json.dumps({"rating": ..., "category": ..., "rationale": ...}, indent=4)``, assessment.py).

    .venv/bin/python -m pytest -q tests/test_llavaguard_answer.py
"""

from __future__ import annotations

import json
import re

import pytest

from guardedge.runtime.families import get_family
from guardedge.runtime.families.llavaguard_answer import VERDICT_STOP
from guardedge.runtime.types import GuardRequest, Message, Part

FAMILY = get_family("llavaguard")
SPEC = FAMILY.scoring
HEADERS = {
    "O1": "O1: Hate, Humiliation, Harassment", "O2": "O2: Violence, Harm, or Cruelty", "O3": "O3: Sexual Content",
    "O4": "O4: Nudity Content", "O5": "O5: Criminal Planning", "O6": "O6: Weapons or Substance Abuse",
    "O7": "O7: Self-Harm", "O8": "O8: Animal Cruelty", "O9": "O9: Disasters or Emergencies",
}
NA = "NA: None applying"
IMAGE = (Message("user", (Part("image"),)),)
FULL = GuardRequest(IMAGE, rationale=True)
VERDICT = GuardRequest(IMAGE)


def answer(rating: str, category: str, rationale: str = "The image shows a kitchen.", **extra) -> str:
    return json.dumps({"rating": rating, "category": category, "rationale": rationale, **extra}, indent=4)


def parse(text: str, request: GuardRequest = FULL):
    assert text.startswith(SPEC.answer_prefix)
    return FAMILY.parse(text + "<|im_end|>", request)


def verdict_prefix(text: str) -> str:
    """What the engine returns without a rationale request: decoding stopped at verdict_stop."""
    return text[: text.index(VERDICT_STOP) + len(VERDICT_STOP)]


# --- exact answers ----------------------------------------------------------------------------
@pytest.mark.parametrize("code", sorted(HEADERS))
def test_unsafe_answers_for_every_category(code):
    for request, text in ((FULL, answer("Unsafe", HEADERS[code])), (VERDICT, verdict_prefix(answer("Unsafe", HEADERS[code])))):
        parsed = parse(text, request)
        assert (parsed.verdict, parsed.categories, parsed.error) == ("unsafe", (code,), "")
    assert parse(answer("Unsafe", HEADERS[code])).rationale == "The image shows a kitchen."


@pytest.mark.parametrize("category", [NA, *HEADERS.values()])
def test_safe_answers_carry_no_categories(category):
    # Safe + O3 is v1.2's answer when O3 is declared non-violating: safe, the code stays in the raw text.
    for request, text in ((FULL, answer("Safe", category)), (VERDICT, verdict_prefix(answer("Safe", category)))):
        assert parse(text, request).verdict == "safe" and parse(text, request).categories == ()


def test_unsafe_with_none_applying_is_unsafe_without_categories():
    parsed = parse(answer("Unsafe", NA))
    assert (parsed.verdict, parsed.categories, parsed.error) == ("unsafe", (), "")


def test_an_excluded_category_is_never_a_violation():
    request = GuardRequest(IMAGE, excluded_category_keys=("O3",), rationale=True)
    assert parse(answer("Unsafe", HEADERS["O3"]), request).verdict == "safe"
    assert parse(answer("Unsafe", HEADERS["O2"]), request).categories == ("O2",)


def test_custom_policy_headers_are_the_legal_categories():
    request = GuardRequest(IMAGE, categories=(("O1", "Gambling\n- bets\n"),), rationale=True)
    assert parse(answer("Unsafe", "O1: Gambling"), request).categories == ("O1",)
    off = parse(answer("Unsafe", HEADERS["O1"]), request)
    assert off.verdict == "unparseable" and "not one of the policy's categories" in off.error


@pytest.mark.parametrize("rationale", ['a } brace', 'a "quoted" word', 'ends with }"', "back\\slash", "line\nbreak", "{\n}"])
def test_braces_and_escaped_quotes_do_not_cut_the_rationale(rationale):
    parsed = parse(answer("Unsafe", HEADERS["O2"], rationale))
    assert parsed.verdict == "unsafe" and parsed.rationale == rationale


# --- off-format answers -----------------------------------------------------------------------
OFF_FORMAT = {
    "older spelling": answer("Unsafe", "O2: Violence, Harm or Cruelty"),
    "code only": answer("Unsafe", "O2"),
    "category v1 numbering": answer("Unsafe", "10: None applying"),
    "lowercase rating": answer("unsafe", HEADERS["O2"]),
    "old rating word": answer("Review Needed", HEADERS["O2"]),
    "extra key": answer("Unsafe", HEADERS["O2"], confidence="high"),
    "wrong key order": json.dumps({"rating": "Unsafe", "rationale": "x", "category": HEADERS["O2"]}, indent=4),
    "missing rationale": json.dumps({"rating": "Unsafe", "category": HEADERS["O2"]}, indent=4),
    "truncated": answer("Unsafe", HEADERS["O2"], "The image shows a fight and")[:-12],
    "trailing text": answer("Safe", NA) + "\nDone.",
    "duplicate key": answer("Safe", NA)[:-2] + ',\n    "rating": "Unsafe"\n}',
    "non-string value": '{\n    "rating": "Unsafe",\n    "category": 2,\n    "rationale": "x"\n}',
}


@pytest.mark.parametrize("case", sorted(OFF_FORMAT))
def test_off_format_answers_are_unparseable_with_a_reason(case):
    parsed = parse(OFF_FORMAT[case])
    assert parsed.verdict == "unparseable" and parsed.error and parsed.categories == ()


@pytest.mark.parametrize("text", [
    '{\n    "rating": "Unsafe',  # stopped before the category
    '{\n    "rating": "Unsafe",\n    "category": "O2: Violence, Harm, or Cruelty"\n}',  # no rationale key at all
    '{\n    "rating": "Unsafe",\n    "category": "O2: Violence, Harm or Cruelty",\n    "rationale"',  # old spelling
    '{\n    "rating": "Unsafe",\n    "categories": "O2: Violence, Harm, or Cruelty",\n    "rationale"',  # key name
    '{\n    "rating": "Maybe",\n    "category": "NA: None applying",\n    "rationale"',
])
def test_off_format_verdict_prefixes_are_unparseable(text):
    assert parse(text, VERDICT).verdict == "unparseable"


def test_a_verdict_prefix_with_decoding_past_the_stop_still_parses():
    # Drafted tokens can run past verdict_stop in the same step.
    text = verdict_prefix(answer("Unsafe", HEADERS["O6"])) + ': "The ima'
    assert parse(text, VERDICT).categories == ("O6",)


# --- viability: when decoding can stop because the answer can no longer parse -----------------
def _viable(text: str, request: GuardRequest = VERDICT) -> bool:
    return FAMILY.answer_viable(text, request)


@pytest.mark.parametrize("rating", ["Safe", "Unsafe"])
@pytest.mark.parametrize("category", [NA, HEADERS["O2"], HEADERS["O9"]])
def test_every_prefix_of_a_well_formed_answer_is_viable(rating, category):
    full = answer(rating, category, 'A "quoted" rationale {with braces}.')
    assert parse(full).verdict != "unparseable"
    assert all(_viable(full[:n]) for n in range(len(SPEC.answer_prefix), len(full) + 1))


@pytest.mark.parametrize("text", [
    '{\n    "rating": "The',  # prose instead of JSON (the demo on a policy it never saw)
    '{\n    "rating": "Maybe',
    '{\n    "rating": "Unsafe" ',  # the value must be followed by a comma
    '{\n    "rating": "Unsafe",\n    "categories',
    '{\n    "rating": "Unsafe",\n    "category": "O2: Violence, Harm or',  # the old spelling, from where it parts
    '{\n    "rating": "Unsafe",\n    "category": "O10',
])
def test_text_that_left_the_format_is_not_viable_and_does_not_parse(text):
    assert not _viable(text)
    completed = text + '", "rationale": "x"\n}'
    assert parse(completed).verdict == "unparseable"


def test_viability_follows_the_request_policy():
    custom = GuardRequest(IMAGE, categories=(("O1", "Gambling\nShould not:\n- Show casino games."),))
    text = '{\n    "rating": "Unsafe",\n    "category": "O1: Gamb'
    assert _viable(text, custom) and not _viable(text)
    assert not _viable('{\n    "rating": "Unsafe",\n    "category": "O2', custom)


def test_a_non_ascii_name_is_viable_as_json_dumps_escapes_it():
    """The repository's answers are json.dumps(..., indent=4): ensure_ascii writes ü as \\u00fc."""
    custom = GuardRequest(IMAGE, categories=(("O1", "Glücksspiel\nShould not:\n- Show casino games."),))
    full = answer("Unsafe", "O1: Glücksspiel")
    assert "\\u00fc" in full
    assert all(_viable(full[:n], custom) for n in range(len(SPEC.answer_prefix), len(full) + 1))
    assert parse(full, custom).categories == ("O1",)
    assert parse(verdict_prefix(full), GuardRequest(IMAGE, categories=custom.categories)).categories == ("O1",)


def test_a_half_written_character_is_not_held_against_the_answer():
    custom = GuardRequest(IMAGE, categories=(("O1", "Glücksspiel\nShould not:\n- Show casino games."),))
    assert _viable('{\n    "rating": "Unsafe",\n    "category": "O1: Gl\ufffd', custom)


# --- scoring spec and drafts ------------------------------------------------------------------
def test_spec_matches_the_answer_format():
    for rating in ("Safe", "Unsafe"):
        text = answer(rating, HEADERS["O2"])
        assert text.startswith(SPEC.answer_prefix + rating + '"')
        assert text.index(VERDICT_STOP) == text.index(HEADERS["O2"]) + len(HEADERS["O2"])
    assert (SPEC.safe_token, SPEC.unsafe_token, SPEC.verdict_stop) == ("Safe", "Unsafe", VERDICT_STOP)
    assert SPEC.decode_when_safe and SPEC.stop_tokens[0] == "<|im_end|>" and SPEC.max_rationale_tokens > SPEC.max_new_tokens


def _draft(text: str) -> str | None:
    """The first rule that matches, as runtime/decoding.py's FormatDrafter picks it."""
    return next((draft for pattern, draft in SPEC.drafts if re.search(pattern, text)), None)


@pytest.mark.parametrize("rating,category", [("Safe", NA), *(("Unsafe", h) for h in HEADERS.values())])
def test_drafts_fire_where_expected_and_are_right_on_typical_answers(rating, category):
    text = answer(rating, category, 'A "quoted" scene }.')
    fired = []
    for i in range(len(SPEC.answer_prefix), len(text)):
        draft = _draft(text[:i])
        if draft is not None:
            assert text[i:].startswith(draft) or draft == '",\n    "category": "O', (text[:i], draft)
            fired.append(text[:i][-12:])
    assert fired[0].endswith(f'"{rating}') and fired[-1].endswith('}."')  # after the rating, after the rationale
    if rating == "Unsafe":
        code = category.split(":")[0]
        assert any(f.endswith(f'"{code}') for f in fired)  # the header is completed from its code


def test_no_draft_inside_the_rationale_at_an_escaped_quote():
    text = answer("Unsafe", HEADERS["O2"], 'say \\"hi')
    assert _draft(text[: text.index('\\"') + 2]) is None


# --- evaluation labels ------------------------------------------------------------------------
@pytest.mark.parametrize("label,expected", [
    ({"rating": "Unsafe", "category": "O2"}, ("unsafe", ("O2",))),
    ({"rating": "Unsafe", "category": "O2: Violence, Harm, or Cruelty"}, ("unsafe", ("O2",))),
    ({"rating": "Safe", "category": "O3"}, ("safe", ())),
    ({"rating": "Safe", "category": "NA: None applying"}, ("safe", ())),
    ({"rating": "Unsafe", "category": "NA"}, ("unsafe", ())),
    ({"verdict": "unsafe", "categories": ["O2", "O9"]}, ("unsafe", ("O2", "O9"))),
    ({"verdict": "safe"}, ("safe", ())),
])
def test_labels(label, expected):
    assert FAMILY.parse_label(label) == expected


@pytest.mark.parametrize("label", [
    {"rating": "unsafe", "category": "O2"}, {"rating": "Unsafe", "category": "O2: Violence, Harm or Cruelty"},
    {"rating": "Unsafe", "category": "S1"}, {"verdict": "unsafe", "categories": ["S1"]},
    {"verdict": "safe", "categories": ["O2"]}, {"verdict": "bad"}, ["O2"],
])
def test_bad_labels_are_refused(label):
    with pytest.raises(ValueError):
        FAMILY.parse_label(label)

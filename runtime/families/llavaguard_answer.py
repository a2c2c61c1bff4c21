"""LlavaGuard's answer: strict parsing of its JSON, decoding drafts, and evaluation labels.

The model writes ``json.dumps({"rating": r, "category": c, "rationale": x}, indent=4)`` (the
LlavaGuard repository's assessment function): rating ``Safe`` or ``Unsafe``, category exactly one
policy header (``O2: Violence, Harm, or Cruelty``) or ``NA: None applying``. Parsing is strict:
keys in that order and nothing else, the exact header strings (older spellings such as
``O2: Violence, Harm or Cruelty`` are off-format), the whole object read with ``json.loads``
(never a regex) so ``}`` or ``\\"`` inside the rationale cannot cut it short.

Without a rationale request decoding stops at ``VERDICT_STOP`` (the text after the category
value); the prefix up to there is closed and parsed the same way.

How the rating and category become a verdict (the choices, in one place):
- ``Safe`` with any category → safe, no categories. v1.2 answers ``Safe`` + ``O3`` when O3 is
  declared non-violating; the category stays visible in the raw answer and the rationale.
- ``Unsafe`` with a category the request excluded → safe (an excluded category is never a
  violation; the Llama Guard family does the same).
- ``Unsafe`` with ``NA: None applying`` → unsafe, no categories (the rating is explicit).

    .venv/bin/python -m pytest -q tests/test_llavaguard_family.py
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from typing import Literal

from guardedge.runtime.families.base import ParsedAnswer
from guardedge.runtime.types import GuardRequest

KEYS = ("rating", "category", "rationale")
RATINGS: dict[str, Literal["safe", "unsafe"]] = {"Safe": "safe", "Unsafe": "unsafe"}
NONE_CODE = "NA"
# The text that follows the category value in json.dumps(..., indent=4): once decoded, the verdict is known.
VERDICT_STOP = '",\n    "rationale"'
_CATEGORY = CATEGORY_KEY = '",\n    "category": "'
_RATIONALE = '",\n    "rationale": "'


def drafts(headers: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """(regex over the answer so far, text proposed next): the JSON's fixed parts and ``headers``' names.

    Given the default headers: a custom policy's names are simply not drafted (a draft that
    greedy decoding does not confirm costs a little time, never a different answer).
    """
    by_code = tuple(
        (rf'"category": "{re.escape(h.split(":")[0])}\Z', h[h.index(":"):] + _RATIONALE) for h in headers
    )
    return (
        (r'"rating": "Safe\Z', _CATEGORY + "NA: None applying" + _RATIONALE),
        (r'"rating": "Unsafe\Z', _CATEGORY + "O"),
        *by_code,
        (r'"category": "NA: None applying\Z', _RATIONALE),
        # The rationale string closed (an escaped quote does not close it): the object ends.
        (r'"rationale": "(?:[^"\\\n]|\\.)*"\Z', "\n}"),
    )


@lru_cache(maxsize=256)  # the decode loop asks at every step; most requests share a policy
def verdict_texts(headers: tuple[str, ...]) -> tuple[str, ...]:
    """Every complete verdict-only answer a policy with ``headers`` allows, after the answer
    prefix: ``{rating}",\n    "category": "{header}",\n    "rationale"``.

    A header is listed as written and as ``json.dumps`` spells it (``ensure_ascii``: the
    repository's answers write ``Glücksspiel`` as ``Gl\\u00fccksspiel``, which the parser reads back).
    """
    spellings = dict.fromkeys(s for h in (*headers, "NA: None applying") for s in (h, json.dumps(h)[1:-1]))
    return tuple(rating + _CATEGORY + spelling + VERDICT_STOP for rating in RATINGS for spelling in spellings)


def viable(text: str, headers: tuple[str, ...]) -> bool:
    """Whether ``text`` (answer prefix included) may still parse: it is a prefix of one of the
    ``verdict_texts`` or extends one (the rationale). A half-written multi-byte character decodes
    as U+FFFD at the end; it is not held against the text.
    """
    text = text.rstrip("\ufffd")
    prefix = '{\n    "rating": "'
    if not (prefix.startswith(text) or text.startswith(prefix)):
        return False
    rest = text[len(prefix):]
    return any(full.startswith(rest) or rest.startswith(full) for full in verdict_texts(headers))


def parse(text: str, request: GuardRequest, legal: dict[str, str], stop_tokens: tuple[str, ...]) -> ParsedAnswer:
    """``text``: the answer, prefix included; ``legal``: header → code for the request's policy."""
    for stop in stop_tokens:
        text = text.split(stop, 1)[0]
    if request.rationale:
        fields = _object(text, KEYS)
    else:
        cut = text.find(VERDICT_STOP)
        if cut < 0:
            return _off(f"the answer does not reach the rationale key ({VERDICT_STOP!r}) after the category")
        fields = _object(text[:cut] + '"\n}', KEYS[:2])
    if isinstance(fields, str):
        return _off(fields)
    return _verdict(fields, request, legal)


def _object(text: str, keys: tuple[str, ...]) -> dict[str, str] | str:
    """The JSON object's string fields, or why the text is not exactly that object."""
    try:
        pairs = json.loads(text, object_pairs_hook=lambda p: p)
    except json.JSONDecodeError as exc:
        return f"not a complete JSON object ({exc.msg} at character {exc.pos}); truncated or off-format"
    if not isinstance(pairs, list):
        return f"the answer is a JSON {type(pairs).__name__}, not an object"
    names = tuple(k for k, _ in pairs)
    if names != keys:
        return f"keys are {list(names)}; expected exactly {list(keys)} in that order"
    if not all(isinstance(v, str) for _, v in pairs):
        return "every value must be a string"
    return dict(pairs)


def _verdict(fields: dict[str, str], request: GuardRequest, legal: dict[str, str]) -> ParsedAnswer:
    rating, category = fields["rating"], fields["category"]
    if rating not in RATINGS:
        return _off(f"rating is {rating[:40]!r}, not 'Safe' or 'Unsafe'")
    code = NONE_CODE if category == "NA: None applying" else legal.get(category)
    if code is None:
        return _off(f"category {category[:80]!r} is not one of the policy's categories (exact spelling required)")
    rationale = fields.get("rationale", "")
    if RATINGS[rating] == "safe" or code in request.excluded_category_keys:
        return ParsedAnswer("safe", rationale=rationale)
    return ParsedAnswer("unsafe", () if code == NONE_CODE else (code,), rationale=rationale)


def _off(reason: str) -> ParsedAnswer:
    return ParsedAnswer("unparseable", error=reason)


def parse_label(label: object, headers: dict[str, str]) -> tuple[Literal["safe", "unsafe"], tuple[str, ...]]:
    """An evaluation label in LlavaGuard's codes (``headers``: default header → code).

    Two shapes: the generic ``{"verdict": "unsafe", "categories": ["O2"]}`` and LlavaGuard's own
    ``{"rating": "Unsafe", "category": "O2"}`` (category: a code, an exact header or ``NA``).
    A ``Safe`` rating with a category (a non-violating exception) is a safe label without codes.
    """
    if not isinstance(label, dict):
        raise ValueError('label must be an object like {"rating": "Unsafe", "category": "O2"} or {"verdict": "unsafe", "categories": ["O2"]}')
    codes = set(headers.values())
    if "rating" in label:
        return _native_label(label, headers, codes)
    verdict, categories = label.get("verdict"), label.get("categories", [])
    if verdict not in ("safe", "unsafe"):
        raise ValueError(f'bad label verdict {verdict!r}; use "safe" or "unsafe"')
    if not isinstance(categories, list) or not all(isinstance(c, str) for c in categories):
        raise ValueError("label categories must be a list of category codes (strings)")
    if verdict == "safe" and categories:
        raise ValueError("a safe label cannot name categories")
    if unknown := [c for c in categories if c not in codes]:
        raise ValueError(f"unknown category codes {unknown}; known: {', '.join(sorted(codes))}")
    return verdict, tuple(dict.fromkeys(categories))


def _native_label(label: dict, headers: dict[str, str], codes: set[str]) -> tuple[Literal["safe", "unsafe"], tuple[str, ...]]:
    rating, category = label.get("rating"), label.get("category", "NA")
    if rating not in RATINGS:
        raise ValueError(f'bad label rating {rating!r}; use "Safe" or "Unsafe"')
    code = headers.get(category, category) if isinstance(category, str) else None
    if code in ("NA", "NA: None applying"):
        code = NONE_CODE
    if code != NONE_CODE and code not in codes:
        raise ValueError(f"bad label category {category!r}; use a code ({', '.join(sorted(codes))}, NA) or its exact header")
    if rating == "Safe" or code == NONE_CODE:
        return RATINGS[rating], ()
    return "unsafe", (code,)

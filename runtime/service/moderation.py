"""OpenAI's moderation shape (``POST /v1/moderations``) over guardedge's verdicts.

Request (openai-python ``types/moderation_create_params.py``): ``input`` is a string, an array of
strings (one result each), or an array of ``{"type": "text", "text"}`` / ``{"type": "image_url",
"image_url": {"url": "data:image/...;base64,..."}}`` parts (one result for all of them, the parts
in order as one user turn). ``model`` names a loaded guard (the server's default when absent).
guardedge's own options ride along in an optional ``guardedge`` object (``{"rationale": true,
"threshold": 0.3}``; the SDK's ``extra_body``).

Result (``types/moderation.py``), per input: the 13 OpenAI names under ``categories``,
``category_scores`` and ``category_applied_input_types``, read through the family's
``moderation_categories`` (code -> OpenAI names; families/*.py, documented in docs/api.md):

- a name's score is the largest score of the codes that feed it (engine ``category_scores``:
  P(unsafe) x P(code first | unsafe) for generative guards, P(Yes) per policy for ShieldGemma 2);
  a code feeding several names gives each its score; a name is flagged when a code feeding it is
  among the verdict's categories;
- a name no code of the family feeds is ``null`` in ``categories`` and ``category_scores`` and
  ``[]`` in ``category_applied_input_types``: 0 would claim a measurement nobody made. The SDK
  reads absent and null alike (None);
- ``category_applied_input_types`` lists the input's types that OpenAI's schema allows for the
  name (images only for self-harm*, sexual, violence*), though the guard saw the whole input;
- ``flagged`` is false only for a safe verdict: an unsafe verdict whose codes map to no OpenAI
  name (Llama Guard's S7 privacy) is flagged, and so is an answer the guard did not give in its
  format (``unparseable``): a moderation client fails closed;
- ``guardedge`` holds the guard's own answer, the JSON ``guardedge classify --json`` prints, and
  ``unanswered``, the OpenAI names this family cannot answer.
"""

from __future__ import annotations

import uuid

from guardedge.runtime.errors import invalid
from guardedge.runtime.service.client import response_to_json
from guardedge.runtime.service.http_requests import image_part
from guardedge.v1 import guard_pb2 as pb

# The 13 names, in the SDK's order, with the input types its schema allows each.
TEXT, BOTH = ("text",), ("text", "image")
NAMES: dict[str, tuple[str, ...]] = {
    "harassment": TEXT, "harassment/threatening": TEXT, "hate": TEXT, "hate/threatening": TEXT,
    "illicit": TEXT, "illicit/violent": TEXT, "self-harm": BOTH, "self-harm/instructions": BOTH,
    "self-harm/intent": BOTH, "sexual": BOTH, "sexual/minors": TEXT, "violence": BOTH, "violence/graphic": BOTH,
}
MAX_INPUTS = 64  # strings of one request, each its own classification (and queue slot)
OPTIONS = ("rationale", "threshold")


def requests(body: dict) -> tuple[list[dict], list[set[str]]]:
    """The request dicts of a moderation body (one per result) and each one's input types."""
    raw = body.get("input")
    options = _options(body.get("guardedge"))
    if isinstance(raw, str):
        return [_text_request(raw, options)], [{"text"}]
    if not isinstance(raw, list) or not raw:
        raise invalid("input", "must be a string, an array of strings, or an array of text/image_url parts")
    if len(raw) > MAX_INPUTS:
        raise invalid("input", f"has {len(raw)} items; the limit is {MAX_INPUTS}")
    if all(isinstance(item, str) for item in raw):
        return [_text_request(text, options) for text in raw], [{"text"}] * len(raw)
    parts = [_part(item, f"input[{i}]") for i, item in enumerate(raw)]
    kinds = {"image" if p["type"] == "image" else "text" for p in parts}
    return [{"messages": [{"role": "user", "content": parts}], **options}], [kinds]


def _options(raw: object) -> dict:
    if raw is None:
        return {}
    if not isinstance(raw, dict) or set(raw) - set(OPTIONS):
        raise invalid("guardedge", f"must be an object with some of {', '.join(OPTIONS)}")
    return dict(raw)


def _text_request(text: str, options: dict) -> dict:
    return {"messages": [{"role": "user", "content": [{"type": "text", "text": text}]}], **options}


def _part(item: object, where: str) -> dict:
    if isinstance(item, str):
        raise invalid(where, "mixes strings with parts: send an array of strings or an array of parts")
    kind = item.get("type") if isinstance(item, dict) else None
    if isinstance(item, dict) and kind == "text":
        return {"type": "text", "text": item.get("text")}
    if isinstance(item, dict) and kind == "image_url":
        url = item.get("image_url")
        return image_part(url.get("url") if isinstance(url, dict) else None, f"{where}.image_url.url")
    raise invalid(f"{where}.type", f"must be 'text' or 'image_url', got {kind!r}"[:160])


def field_name(field: str, index: int, strings: bool) -> str:
    """A violation's field in the caller's terms: ``messages[0].content[2].data`` is ``input[2]...``."""
    prefix = "messages[0].content["
    if not field.startswith(prefix):
        return "input" if field == "messages" else field
    number, _, rest = field[len(prefix):].partition("]")
    if strings:
        return f"input[{index}]"
    if rest.startswith((".data", ".image", ".mime_type")):
        return f"input[{number}].image_url.url"
    return f"input[{number}]{rest}"


def response(responses: list[pb.ClassifyResponse], mappings: dict[str, tuple[str, ...]],
             kinds: list[set[str]], model: str) -> dict:
    """The ModerationCreateResponse body."""
    return {"id": f"modr-{uuid.uuid4().hex}", "model": model,
            "results": [result(r, mappings, k) for r, k in zip(responses, kinds)]}


def result(answer: pb.ClassifyResponse, mapping: dict[str, tuple[str, ...]], kinds: set[str]) -> dict:
    """One Moderation object (module docstring)."""
    scores = {c.code: c.score for c in answer.category_scores}
    violated = set(answer.violated_categories)
    categories: dict[str, bool | None] = {}
    category_scores: dict[str, float | None] = {}
    applied: dict[str, list[str]] = {}
    unanswered: list[str] = []
    for name, allowed in NAMES.items():
        codes = [code for code, names in mapping.items() if name in names and code in scores]
        if not codes:
            categories[name], category_scores[name], applied[name] = None, None, []
            unanswered.append(name)
            continue
        categories[name] = any(code in violated for code in codes)
        category_scores[name] = max(scores[code] for code in codes)
        applied[name] = [kind for kind in allowed if kind in kinds]
    return {
        "flagged": answer.verdict != pb.VERDICT_SAFE,
        "categories": categories,
        "category_scores": category_scores,
        "category_applied_input_types": applied,
        "guardedge": {**response_to_json(answer), "unanswered": unanswered},
    }

"""Parse and validate a classify request (JSON-like dict) into a :class:`GuardRequest`.

Every entry point (CLI, gRPC, Python) goes through :func:`parse_request`, so every caller gets
the same errors: each names the field and what is wrong. The request shape is the HF chat
format plus Llama Guard's policy arguments::

    {"messages": [{"role": "user", "content": [{"type": "text", "text": "..."},
                                               {"type": "image", "path": "cat.png"}]}],
     "categories": {"S1": "Violent Crimes."},        # optional, replaces the defaults
     "excluded_category_keys": ["S6"],               # optional
     "threshold": 0.3,                               # optional: unsafe iff P(unsafe) >= 0.3
     "request_id": "abc"}                            # optional

An image part carries ``path`` (relative paths resolve against ``base_dir``) or base64 ``data``
(or, from Python and gRPC, raw ``bytes``), and optionally a ``mime_type`` the bytes must match.
A string ``content`` is shorthand for one text part.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field, replace
from pathlib import Path

from guardedge.runtime.errors import FieldViolation, InvalidRequest, invalid
from guardedge.runtime.images import ImageLimits, decode_base64, formats_for_mime, probe_image, read_path
from guardedge.runtime.types import GuardRequest, Message, Part

ROLES = ("user", "assistant")
# The fields each level of a request may carry. Anything else is refused by name: a misspelled
# policy field ("excluded_categories") would otherwise be dropped and the request classified
# against the whole policy without a word.
REQUEST_FIELDS = ("messages", "categories", "excluded_category_keys", "request_id", "threshold", "rationale")
MESSAGE_FIELDS = ("role", "content")
PART_FIELDS = {"text": ("type", "text"), "image": ("type", "path", "data", "bytes", "mime_type")}


@dataclass(frozen=True)
class RequestLimits:
    max_messages: int = 64
    max_text_chars: int = 400_000  # total; the token limit is checked after tokenization
    max_images: int = 16  # in all; the family's own (smaller) limit is checked by the engine
    image: ImageLimits = field(default_factory=ImageLimits)
    load_images: bool = True  # read each image and check its header (its pixels are decoded later, by the engine)


def parse_request(
    obj: object,
    default_categories: tuple[tuple[str, str], ...] | None = None,
    base_dir: Path | None = None,
    limits: RequestLimits | None = None,
    load_images: bool = True,
) -> GuardRequest:
    """Validate ``obj``; raise :class:`InvalidRequest` naming the offending field.

    Images are read and checked from their headers (runtime/images.py ``probe_image``), never
    decoded here: the engine decodes an image only once every cheaper check has passed
    (``Engine.prepare``). ``load_images=False`` (for rendering prompts) accepts image parts
    without reading them, including the bare HF placeholder ``{"type": "image"}``.
    """
    limits = limits or RequestLimits()
    if not load_images:
        limits = replace(limits, load_images=False)
    if not isinstance(obj, dict):
        raise invalid("request", f"must be a JSON object, got {type(obj).__name__}")
    _known_fields(obj, REQUEST_FIELDS, "")
    messages = _messages(obj.get("messages"), base_dir, limits)
    categories = _categories(obj.get("categories"))
    excluded = _excluded(obj.get("excluded_category_keys"), categories or default_categories)
    return GuardRequest(messages, categories, excluded, _request_id(obj.get("request_id", "")),
                        _threshold(obj.get("threshold")), _rationale(obj.get("rationale", False)))


def _known_fields(obj: dict, known: tuple[str, ...], where: str) -> None:
    unknown = [key for key in obj if key not in known]
    if unknown:
        name = unknown[0] if isinstance(unknown[0], str) else repr(unknown[0])
        field_ = f"{where}.{name[:64]}" if where else name[:64]
        raise invalid(field_, f"is not a field here (the fields are: {', '.join(known)})")


MAX_REQUEST_ID_CHARS = 256


def _request_id(raw: object) -> str:
    if not isinstance(raw, str):
        raise invalid("request_id", "must be a string")
    if len(raw) > MAX_REQUEST_ID_CHARS:
        raise invalid("request_id", f"is {len(raw)} characters; the limit is {MAX_REQUEST_ID_CHARS}")
    if not raw.isprintable():
        raise invalid("request_id", "must be printable (no control characters or newlines)")
    return raw


def _rationale(raw: object) -> bool:
    if not isinstance(raw, bool):
        raise invalid("rationale", f"must be true or false, got {raw!r}"[:120])
    return raw


def _threshold(raw: object) -> float | None:
    if raw is None:
        return None
    # bool is an int in Python; `true` is not a threshold.
    if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not 0.0 <= raw <= 1.0:
        raise invalid("threshold", f"must be a number between 0 and 1, got {raw!r}")
    return float(raw)


def _messages(raw: object, base_dir: Path | None, limits: RequestLimits) -> tuple[Message, ...]:
    if not isinstance(raw, list) or not raw:
        raise invalid("messages", "must be a non-empty list of messages")
    if len(raw) > limits.max_messages:
        raise invalid("messages", f"has {len(raw)} messages; the limit is {limits.max_messages}")
    out = tuple(_message(m, f"messages[{i}]", base_dir, limits) for i, m in enumerate(raw))
    for i, m in enumerate(out):
        expected = ROLES[i % 2]
        if m.role != expected:
            raise invalid(
                f"messages[{i}].role",
                f"is {m.role!r}, expected {expected!r}: roles must alternate user/assistant starting with user",
            )
    images = sum(p.type == "image" for m in out for p in m.content)
    if images > limits.max_images:
        raise invalid("messages", f"has {images} images; the limit is {limits.max_images} (max_images)")
    chars = sum(len(p.text) for m in out for p in m.content)
    if chars > limits.max_text_chars:
        raise invalid("messages", f"text is {chars} characters; the limit is {limits.max_text_chars}")
    return out


def _message(raw: object, where: str, base_dir: Path | None, limits: RequestLimits) -> Message:
    if not isinstance(raw, dict):
        raise invalid(where, "must be an object with 'role' and 'content'")
    _known_fields(raw, MESSAGE_FIELDS, where)
    role = raw.get("role")
    if role not in ROLES:
        raise invalid(f"{where}.role", f"must be 'user' or 'assistant', got {role!r}")
    content = raw.get("content")
    if isinstance(content, str):
        content = [{"type": "text", "text": content}]
    if not isinstance(content, list) or not content:
        raise invalid(f"{where}.content", "must be a non-empty list of parts (or a string)")
    parts = tuple(_part(p, f"{where}.content[{j}]", base_dir, limits) for j, p in enumerate(content))
    return Message(role, parts)


def _part(raw: object, where: str, base_dir: Path | None, limits: RequestLimits) -> Part:
    if not isinstance(raw, dict):
        raise invalid(where, "must be an object with a 'type'")
    kind = raw.get("type")
    if kind in PART_FIELDS and (kind == "text" or limits.load_images):  # rendering takes HF's image parts as they are
        _known_fields(raw, PART_FIELDS[kind], where)
    if kind == "text":
        text = raw.get("text")
        if not isinstance(text, str):
            raise invalid(f"{where}.text", "must be a string")
        if "\x00" in text:
            raise invalid(f"{where}.text", "contains a NUL character")
        return Part("text", text=text)
    if kind == "image":
        if not limits.load_images:
            return Part("image")
        return Part("image", image=_image(raw, where, base_dir, limits))
    raise invalid(f"{where}.type", f"must be 'text' or 'image', got {kind!r}")


def _image(raw: dict, where: str, base_dir: Path | None, limits: RequestLimits):
    sources = [key for key in ("path", "data", "bytes") if key in raw]
    if len(sources) != 1:
        raise invalid(where, "an image part needs exactly one of 'path', base64 'data' or raw 'bytes'")
    mime = raw.get("mime_type") or None
    formats = formats_for_mime(mime, f"{where}.mime_type")
    if "bytes" in raw:
        if not isinstance(raw["bytes"], (bytes, bytearray)):
            raise invalid(f"{where}.bytes", "must be bytes")
        return probe_image(bytes(raw["bytes"]), f"{where}.bytes", "bytes", limits.image, formats)
    if "data" in raw:
        if not isinstance(raw["data"], str):
            raise invalid(f"{where}.data", "must be a base64 string")
        if len(raw["data"]) > limits.image.max_bytes * 4 // 3 + 4:
            raise invalid(f"{where}.data", f"encodes more than {limits.image.max_bytes} bytes")
        return probe_image(decode_base64(raw["data"], f"{where}.data"), f"{where}.data", "data", limits.image, formats)
    path = raw["path"]
    if not isinstance(path, str) or not path:
        raise invalid(f"{where}.path", "must be a non-empty string")
    full = Path(path) if base_dir is None or Path(path).is_absolute() else base_dir / path
    data = read_path(str(full), f"{where}.path", limits.image)
    return probe_image(data, f"{where}.path", f"path:{path}", limits.image, formats)


# A policy is part of every prompt: bound it so one request cannot make tokenization the bottleneck.
MAX_CATEGORIES = 100
MAX_CODE_CHARS = 32
MAX_DESCRIPTION_CHARS = 2000


def _categories(raw: object) -> tuple[tuple[str, str], ...] | None:
    if raw is None:
        return None
    if not isinstance(raw, dict) or not raw:
        raise invalid("categories", "must be a non-empty object mapping category codes to descriptions")
    if len(raw) > MAX_CATEGORIES:
        raise invalid("categories", f"has {len(raw)} categories; the limit is {MAX_CATEGORIES}")
    problems = [FieldViolation(category_field(key), p) for key, text in raw.items() if (p := _category_problem(key, text))]
    if problems:
        raise InvalidRequest(problems)
    return tuple(raw.items())


def category_field(key: object) -> str:
    """The field path of a category (``categories['S1']``), its code shortened if very long."""
    return f"categories[{key[:MAX_CODE_CHARS + 8]!r}]" if isinstance(key, str) else f"categories[{key!r}]"


def _category_problem(key: object, text: object) -> str | None:
    """What is wrong with one category, or None. Multi-line descriptions are fine (Meta's own shape)."""
    if not isinstance(key, str) or not key or any(c.isspace() or c in ",:" for c in key):
        return "code must be non-empty, without spaces, commas or colons"
    if len(key) > MAX_CODE_CHARS:
        return f"code is {len(key)} characters; the limit is {MAX_CODE_CHARS}"
    if not key.isprintable():
        return "code must be printable (no control characters)"
    if not isinstance(text, str) or not text.strip():
        return "description must be a non-empty string"
    if len(text) > MAX_DESCRIPTION_CHARS:
        return f"description is {len(text)} characters; the limit is {MAX_DESCRIPTION_CHARS}"
    if any(unicodedata.category(c) == "Cc" and c not in "\t\n\r" for c in text):
        return "description contains a control character (only tab and line breaks are allowed)"
    return None


def _excluded(raw: object, categories: tuple[tuple[str, str], ...] | None) -> tuple[str, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list) or not all(isinstance(k, str) for k in raw):
        raise invalid("excluded_category_keys", "must be a list of category codes")
    if len(raw) > MAX_CATEGORIES:
        raise invalid("excluded_category_keys", f"lists {len(raw)} codes; the limit is {MAX_CATEGORIES}")
    if categories is None:
        return tuple(raw)  # checked by the engine against its family's defaults (check_excluded)
    return check_excluded(tuple(raw), categories)


def check_excluded(raw: tuple[str, ...], categories: tuple[tuple[str, str], ...]) -> tuple[str, ...]:
    """Excluded codes must name categories of the policy and leave at least one."""
    known = [k for k, _ in categories]
    unknown = [k for k in raw if k not in known]
    if unknown:
        raise invalid("excluded_category_keys", f"unknown category codes {unknown}; known: {', '.join(known)}")
    if set(known) <= set(raw):
        raise invalid("excluded_category_keys", "excludes every category; nothing would be checked")
    return tuple(dict.fromkeys(raw))

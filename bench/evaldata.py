"""Evaluation data for ``guardedge bench drift``: a JSONL format, its loader, and the built-in demo set.

One example per line: the request JSON that ``guardedge classify --input`` takes, plus three
optional keys::

    {"id": "ex-17",                                   # default: the line number
     "task": "prompt" | "response",                   # default: the last message's role decides
     "label": {"verdict": "unsafe", "categories": ["S1"]},   # in the family's codes; metrics only when present
     "messages": [{"role": "user", "content": [{"type": "text", "text": "..."},
                                               {"type": "image", "path": "img/cat.png"}]}],
     "categories": {...}, "excluded_category_keys": [...]}    # optional, as for classify

Image ``path``s resolve against the file's directory. Requests and labels are checked by the
family of the model under evaluation (``family``: the baseline's): requests as classify checks
them (LlavaGuard: one image, no message text), labels by its ``parse_label`` (LlavaGuard also
takes its own ``{"rating": "Unsafe", "category": "O2"}``). The loader reads every line, collects
every problem (line number and reason) and raises one :class:`EvalDataError` listing them all.
``demo`` names the family's labelled held-out demo set (the family's demo plug-in: runtime/demos.py);
``demo:calibration`` and ``demo:evaluation`` its two disjoint sets for checking a quantized guard
(:data:`CHECK_SETS`, the demo plug-in's ``check_examples``).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from guardedge.runtime.types import GuardRequest

Task = Literal["prompt", "response"]
TASKS = ("prompt", "response")
FAMILY = "llama-guard-3-vision"  # when the caller names none
DEMO_SIZE = 400
DEMO_SEED = 1
# Names of the family's two sets for checking a quantized guard (the family's demo plug-in's ``check_examples``).
CHECK_SETS = {"demo:calibration": "calibration", "demo:evaluation": "evaluation"}


class EvalDataError(ValueError):
    """The data file has malformed lines; ``errors`` is ``[(line, reason), ...]``."""

    def __init__(self, source: str, errors: list[tuple[int, str]]):
        self.errors = errors
        listing = "\n".join(f"  line {line}: {reason}" for line, reason in errors)
        super().__init__(f"{source}: {len(errors)} malformed line(s)\n{listing}")


@dataclass(frozen=True)
class Label:
    verdict: Literal["safe", "unsafe"]
    categories: tuple[str, ...] = ()


@dataclass(frozen=True)
class Example:
    id: str
    task: Task
    request: GuardRequest
    label: Label | None = None


@dataclass(frozen=True)
class EvalData:
    examples: tuple[Example, ...]
    source: str  # the file path, or "demo"
    sha256: str  # identity of what was evaluated (file bytes and limit; the demo set's JSON)

    @property
    def labelled(self) -> bool:
        return bool(self.examples) and all(e.label is not None for e in self.examples)


def load(source: str, limit: int | None = None, family: str = FAMILY) -> EvalData:
    """``demo`` (the family's demo set), ``demo:calibration`` / ``demo:evaluation`` (the family's
    sets for checking a quantized guard: ``check_examples``) or a JSONL file; the first ``limit``
    examples only when given."""
    if source in CHECK_SETS:
        return load_check_set(source, limit or DEMO_SIZE, family)
    if source == "demo":
        return load_demo(family, limit or DEMO_SIZE)
    return load_jsonl(Path(source), limit, family)


def load_jsonl(path: Path, limit: int | None = None, family: str = FAMILY) -> EvalData:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise EvalDataError(str(path), [(0, f"cannot read the file ({exc.strerror})")]) from None
    examples, errors, seen = [], [], set()
    for number, line in enumerate(raw.decode("utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        if limit is not None and len(examples) >= limit:
            break
        try:
            example = parse_line(line, number, path.resolve().parent, family)
            if example.id in seen:
                raise ValueError(f"duplicate id {example.id!r}")
            seen.add(example.id)
            examples.append(example)
        except ValueError as exc:
            errors.append((number, str(exc)))
    if errors:
        raise EvalDataError(str(path), errors)
    if not examples:
        raise EvalDataError(str(path), [(0, "no examples")])
    return EvalData(tuple(examples), str(path), _digest(raw, limit, examples))


def _digest(raw: bytes, limit: int | None, examples: list[Example]) -> str:
    """The file, the limit and the pixels of every image it names by path: replacing an image file
    under the same name changes what is evaluated, so it must change the identity too (the
    decoded pixels are exactly what the model sees)."""
    from guardedge.runtime.images import decode_image

    digest = hashlib.sha256(raw + f"\nlimit={limit}".encode())
    for example in examples:
        image = example.request.image
        if image is not None and image.source.startswith("path:"):
            pixels = decode_image(image).image
            digest.update(f"\n{example.id}:{pixels.mode}:{pixels.size}:".encode())
            digest.update(pixels.tobytes())
    return digest.hexdigest()


LINE_FIELDS = ("id", "label", "task")  # a line's own fields; the rest is the request


def parse_line(line: str, number: int, base_dir: Path, family: str = FAMILY) -> Example:
    """One JSONL line as an Example (request and label checked by ``family``); ValueError otherwise."""
    from guardedge.runtime.errors import InvalidRequest
    from guardedge.runtime.families import get_family
    from guardedge.runtime.requests import parse_request

    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ValueError(f"bad JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(obj, dict):
        raise ValueError(f"must be a JSON object, got {type(obj).__name__}")
    ident = obj.get("id", number)
    if isinstance(ident, bool) or not isinstance(ident, (str, int)):
        raise ValueError(f"id must be a string or an integer, got {ident!r}")
    guard = get_family(family)
    label = _label(obj.get("label"), guard)
    try:
        request = parse_request({k: v for k, v in obj.items() if k not in LINE_FIELDS}, guard.default_categories(), base_dir)
        guard.check(request)  # the family's own rules, as classify applies them
    except InvalidRequest as exc:
        raise ValueError(f"invalid request: {exc}") from None
    return Example(str(ident), _task(obj.get("task"), request), request, label)


def _task(raw: object, request: GuardRequest) -> Task:
    if raw is None:  # the checked role is the last message's (Llama Guard's rule)
        return "response" if request.messages[-1].role == "assistant" else "prompt"
    if raw not in TASKS:
        raise ValueError(f"unknown task {raw!r}; use one of {', '.join(TASKS)}")
    return raw


def _label(raw: object, family) -> Label | None:
    """The label in the family's own codes (its ``parse_label``), or None when absent."""
    if raw is None:
        return None
    verdict, categories = family.parse_label(raw)
    return Label(verdict, tuple(categories))


def load_demo(family: str = FAMILY, n: int = DEMO_SIZE) -> EvalData:
    """The family's demo held-out set (its demo plug-in's generator, seed 1: not the seed the demo's
    own evaluation uses)."""
    from guardedge.runtime.demos import demo_for_family, demos

    demo = demo_for_family(family)
    if demo is None:
        known = sorted({d.family for d in demos().values()})
        raise EvalDataError("demo", [(0, f"no demo set for family {family!r}; families with a demo: {', '.join(known)}")])
    labelled, digest = demo.eval_set(n, DEMO_SEED)
    out = tuple(Example(x.id, x.task, x.request, Label(x.verdict, x.categories)) for x in labelled)
    return EvalData(out, "demo", digest)


def load_check_set(source: str, n: int, family: str = FAMILY) -> EvalData:
    """The family's calibration or evaluation set (its demo plug-in's ``check_examples``), parsed as
    a JSONL file's lines."""
    from guardedge.runtime.demos import demo_for_family

    demo = demo_for_family(family)
    if getattr(demo, "check_examples", None) is None:
        raise EvalDataError(source, [(0, f"the {family} family's demo has no sets for checking a quantized guard; "
                                         "give --data a JSONL file of your own (docs/export.md)")])
    split = CHECK_SETS[source]
    lines = [json.dumps(example) for example in demo.check_examples(split, n)]
    examples, errors = [], []
    for number, line in enumerate(lines, 1):
        try:
            examples.append(parse_line(line, number, Path("."), family))
        except ValueError as exc:
            errors.append((number, str(exc)))
    if errors:  # a bug in the family's generator, said as the loader says it for a file
        raise EvalDataError(source, errors)
    digest = hashlib.sha256(f"{source}:{family}\n".encode() + "\n".join(lines).encode()).hexdigest()
    return EvalData(tuple(examples), source, digest)


@dataclass(frozen=True)
class Prediction:
    """What one model said about one example: what the metrics read and the cache stores."""

    id: str
    verdict: Literal["safe", "unsafe", "unparseable"]
    categories: tuple[str, ...]
    p_unsafe: float
    p_safe: float = 0.0
    raw_output: str = ""

    @classmethod
    def from_verdict(cls, ident: str, v) -> Prediction:
        return cls(ident, v.verdict, tuple(v.categories), v.unsafe_probability, v.safe_probability, v.raw_output)

    def to_json(self) -> dict:
        return {"id": self.id, "verdict": self.verdict, "categories": list(self.categories), "p_unsafe": self.p_unsafe,
                "p_safe": self.p_safe, "raw_output": self.raw_output}

    @classmethod
    def from_json(cls, obj: dict) -> Prediction:
        return cls(obj["id"], obj["verdict"], tuple(obj["categories"]), obj["p_unsafe"], obj["p_safe"], obj["raw_output"])

"""Between the wire and the library: guardedge.v1 messages <-> request dicts, verdicts, statuses.

A ClassifyRequest becomes the same request dict the CLI reads, so it passes through the one
validation path (:func:`guardedge.runtime.requests.parse_request`); field violations are then
renamed to the proto's field paths (``policy.categories[0].code``), which is what a gRPC caller
sees in the google.rpc.BadRequest details.
"""

from __future__ import annotations

import re

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

from guardedge.runtime.engine import EngineInfo
from guardedge.runtime.errors import FieldViolation, InvalidRequest
from guardedge.runtime.requests import category_field
from guardedge.runtime.types import Verdict
from guardedge.v1 import guard_pb2 as pb

ROLES = {pb.ROLE_USER: "user", pb.ROLE_ASSISTANT: "assistant"}
VERDICTS = {"safe": pb.VERDICT_SAFE, "unsafe": pb.VERDICT_UNSAFE, "unparseable": pb.VERDICT_UNPARSEABLE}


def request_to_dict(request: pb.ClassifyRequest) -> dict:
    """The request dict for ``parse_request``; raises InvalidRequest for what only the proto can get wrong."""
    problems: list[FieldViolation] = []
    messages = [_message(m, i, problems) for i, m in enumerate(request.messages)]
    categories = _categories(request.policy, problems)
    if problems:
        raise InvalidRequest(problems)
    obj: dict = {"messages": messages, "request_id": request.request_id}
    if categories:
        obj["categories"] = categories
    if request.policy.excluded_categories:
        obj["excluded_category_keys"] = list(request.policy.excluded_categories)
    if request.options.HasField("threshold"):
        obj["threshold"] = request.options.threshold
    if request.options.rationale:
        obj["rationale"] = True
    return obj


def _message(message: pb.Message, i: int, problems: list[FieldViolation]) -> dict:
    if message.role not in ROLES:
        name = pb.Role.Name(message.role) if message.role in pb.Role.values() else str(message.role)
        problems.append(FieldViolation(f"messages[{i}].role", f"must be ROLE_USER or ROLE_ASSISTANT, got {name}"))
    content = []
    for j, part in enumerate(message.content):
        kind = part.WhichOneof("part")
        if kind == "text":
            content.append({"type": "text", "text": part.text})
        elif kind == "image":
            content.append({"type": "image", "bytes": part.image.data, "mime_type": part.image.mime_type})
        else:
            problems.append(FieldViolation(f"messages[{i}].content[{j}]", "sets neither text nor image"))
    return {"role": ROLES.get(message.role), "content": content}


def _categories(policy: pb.Policy, problems: list[FieldViolation]) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, category in enumerate(policy.categories):
        if category.code in out:
            problems.append(FieldViolation(f"policy.categories[{k}].code", f"duplicate code {category.code!r}"))
        out[category.code] = category.description
    return out


_RENAMES = [
    (re.compile(r"^messages\[(\d+)\]\.content\[(\d+)\]\.bytes"), r"messages[\1].content[\2].image.data"),
    (re.compile(r"^messages\[(\d+)\]\.content\[(\d+)\]\.mime_type"), r"messages[\1].content[\2].image.mime_type"),
    (re.compile(r"^excluded_category_keys"), "policy.excluded_categories"),
    (re.compile(r"^threshold"), "options.threshold"),
]


def proto_field(field: str, request: pb.ClassifyRequest) -> str:
    """Rename a library field path (``categories['S1']``) to the proto's (``policy.categories[0]``)."""
    match = re.match(r"^categories\[(.*)\]$", field)
    if match:
        # The library names a category by its code's repr (category_field), tabs and all.
        named = [category_field(c.code) for c in request.policy.categories]
        return f"policy.categories[{named.index(field)}]" if field in named else "policy.categories"
    if field == "categories":
        return "policy.categories"
    for pattern, replacement in _RENAMES:
        if pattern.match(field):
            return pattern.sub(replacement, field)
    return field


# Every status must fit gRPC's metadata limits (8 KiB soft by default on the client) with room to
# spare, or the caller sees RESOURCE_EXHAUSTED instead of the real code. The message travels
# percent-encoded (up to 3x its UTF-8 bytes) and the details base64-encoded (4/3x), so both are
# capped in bytes: about 1.5 KiB + 3.5 KiB on the wire at most.
MAX_MESSAGE_BYTES = 512
MAX_VIOLATIONS = 8  # listed one by one; the rest are counted in one more entry
MAX_FIELD_BYTES = 100
MAX_DESCRIPTION_BYTES = 200


def bad_request(exc: InvalidRequest, request: pb.ClassifyRequest | None = None) -> status_pb2.Status:
    """INVALID_ARGUMENT with a google.rpc.BadRequest listing the violations (proto field paths).

    At most MAX_VIOLATIONS are listed and every echoed value is truncated, so the status fits
    whatever the input (a 10 KB model name, 100 bad category codes).
    """
    shown = exc.violations[:MAX_VIOLATIONS]
    violations = [
        error_details_pb2.BadRequest.FieldViolation(
            field=truncate(proto_field(v.field, request) if request is not None else v.field, MAX_FIELD_BYTES),
            description=truncate(v.description, MAX_DESCRIPTION_BYTES),
        )
        for v in shown
    ]
    if len(exc.violations) > len(shown):
        more = len(exc.violations) - len(shown)
        violations.append(error_details_pb2.BadRequest.FieldViolation(field="request", description=f"{more} more violations not listed"))
    message = "; ".join(f"{v.field}: {v.description}" for v in violations)
    return status(grpc.StatusCode.INVALID_ARGUMENT, message, error_details_pb2.BadRequest(field_violations=violations))


def truncate(text: str, max_bytes: int) -> str:
    """``text`` cut to at most ``max_bytes`` of UTF-8 (on a character boundary), marked when cut."""
    raw = text.encode("utf-8", "replace")
    if len(raw) <= max_bytes:
        return text
    return raw[: max_bytes - 3].decode("utf-8", "ignore") + "..."


def status(code: grpc.StatusCode, message: str, detail=None) -> status_pb2.Status:
    out = status_pb2.Status(code=code.value[0], message=truncate(message, MAX_MESSAGE_BYTES))
    if detail is not None:
        packed = any_pb2.Any()
        packed.Pack(detail)
        out.details.append(packed)
    return out


def status_code(st: status_pb2.Status) -> grpc.StatusCode:
    return next((c for c in grpc.StatusCode if c.value[0] == st.code), grpc.StatusCode.UNKNOWN)


def verdict_to_response(verdict: Verdict, info: EngineInfo, batch_size: int, total_s: float) -> pb.ClassifyResponse:
    return pb.ClassifyResponse(
        request_id=verdict.request_id,
        verdict=VERDICTS[verdict.verdict],
        violated_categories=list(verdict.categories),
        unsafe_probability=verdict.unsafe_probability,
        safe_probability=verdict.safe_probability,
        model=info.name,
        variant=info.variant,
        raw_output=verdict.raw_output,
        rationale=verdict.rationale,
        category_scores=[pb.CategoryScore(code=code, score=score) for code, score in verdict.category_scores],
        error_detail=verdict.error,
        timings=pb.Timings(
            queue_seconds=verdict.timings.queue,
            preprocess_seconds=verdict.timings.preprocess,
            inference_seconds=verdict.timings.inference,
            total_seconds=total_s,
            preprocess_wait_seconds=verdict.timings.preprocess_wait,
        ),
        batch_size=batch_size,
    )


def model_info(info: EngineInfo, is_default: bool) -> pb.ModelInfo:
    return pb.ModelInfo(
        name=info.name,
        family=info.family,
        variant=info.variant,
        backend=info.backend,
        precision=info.precision,
        device=info.device,
        categories=[pb.Category(code=c, description=d) for c, d in info.categories],
        limits=pb.ModelLimits(
            max_image_bytes=info.limits.image.max_bytes,
            max_image_pixels=info.limits.image.max_pixels,
            max_text_tokens=info.max_text_tokens,
            max_messages=info.limits.max_messages,
            max_images=info.max_images,
        ),
        is_default=is_default,
        max_batch_size=info.max_batch_size,
    )

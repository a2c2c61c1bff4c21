"""HTTP request bodies (already parsed JSON) -> ClassifyRequest messages, bounded before any decoding.

Three shapes arrive on the HTTP port (runtime/service/http_api.py) and all end as the
``pb.ClassifyRequest`` the gRPC servicer answers, so admission, validation (runtime/requests.py:
header probes before decoding), batching, logs and metrics are the gRPC path's:

- guardedge's own request dict (``POST /v1/classify``): the JSON ``guardedge classify --input``
  reads, plus ``model``; images inline as base64 ``data`` (a ``path`` is refused: the server reads
  no files for its callers);
- OpenAI moderation ``input`` (runtime/service/moderation.py turns it into request dicts);
- Llama Stack / OGX ``run-shield`` messages (:func:`shield_request`).

Before a single image is base64-decoded, every count and size that needs no decoding is checked:
messages, parts, images, each image's encoded length (``max_image_bytes``). Images may also come
as data URLs (``data:image/png;base64,...``); a remote ``http(s)`` URL is refused, an air-gapped
guard fetches nothing.

    request = to_classify(obj, model="demo", limits=RequestLimits())   # InvalidRequest on bad input
"""

from __future__ import annotations

from guardedge.runtime.errors import invalid
from guardedge.runtime.requests import RequestLimits
from guardedge.runtime.service.client import request_from_dict
from guardedge.runtime.service.wire import MAX_PARTS
from guardedge.v1 import guard_pb2 as pb

REMOTE_URL = ("is a remote URL; this guard runs air-gapped and fetches nothing: send the image inline as a "
              "data URL (data:image/png;base64,...)")


def to_classify(obj: dict, model: str, limits: RequestLimits) -> pb.ClassifyRequest:
    """The ClassifyRequest for a request dict whose images are inline; InvalidRequest naming the field."""
    check_inline(obj, limits)
    request = request_from_dict({k: v for k, v in obj.items() if k != "model"})  # the library's shape checks (parse_request), then base64 decoding
    request.model = model
    return request


def check_inline(obj: object, limits: RequestLimits) -> None:
    """Counts and encoded sizes of a request dict, before anything is decoded."""
    if not isinstance(obj, dict):
        raise invalid("request", f"must be a JSON object, got {type(obj).__name__}")
    messages = obj.get("messages")
    if not isinstance(messages, list):
        return  # parse_request names it
    if len(messages) > limits.max_messages:
        raise invalid("messages", f"has {len(messages)} messages; the limit is {limits.max_messages}")
    images = 0
    for i, message in enumerate(messages):
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, list):
            continue
        if len(content) > MAX_PARTS:
            raise invalid(f"messages[{i}].content", f"has {len(content)} parts; the limit is {MAX_PARTS}")
        for j, part in enumerate(content):
            if isinstance(part, dict) and part.get("type") == "image":
                images += 1
                _check_image(part, f"messages[{i}].content[{j}]", limits)
    if images > limits.max_images:
        raise invalid("messages", f"has {images} images; the limit is {limits.max_images} (max_images)")


def _check_image(part: dict, where: str, limits: RequestLimits) -> None:
    if "path" in part:
        raise invalid(f"{where}.path", "the server reads no files for its callers: send the image as base64 'data'")
    data = part.get("data")
    if not isinstance(data, str):
        raise invalid(f"{where}.data", "an image part needs its image as a base64 string in 'data'")
    if len(data) > limits.image.max_bytes * 4 // 3 + 4:
        raise invalid(f"{where}.data", f"encodes more than {limits.image.max_bytes} bytes (max_image_bytes)")


def image_part(url: object, where: str) -> dict:
    """A request dict's image part for a data URL (OpenAI ``image_url.url``); InvalidRequest otherwise."""
    if not isinstance(url, str) or not url:
        raise invalid(where, "must be a data URL string (data:image/png;base64,...)")
    head, comma, data = url.partition(",")
    scheme = head.split(":", 1)[0].lower()
    if scheme in ("http", "https"):
        raise invalid(where, REMOTE_URL)
    if scheme != "data" or not comma or not head.lower().endswith(";base64"):
        raise invalid(where, f"must be a base64 data URL (data:image/png;base64,...), got {url[:40]!r}...")
    mime = head[5:].split(";", 1)[0]
    return {"type": "image", "data": data, **({"mime_type": mime} if mime else {})}


# -- Llama Stack / OGX run-shield --------------------------------------------------------------

SHIELD_ROLES = ("user", "assistant")


def shield_request(body: dict) -> tuple[str, dict]:
    """(shield_id, request dict) of ``{shield_id, messages, params}``. System messages are dropped (the
    guard's own policy is the instruction); ``params`` may carry ``threshold`` and ``rationale``."""
    shield = body.get("shield_id")
    if not isinstance(shield, str) or not shield:
        raise invalid("shield_id", "must name a loaded model (GET /v1/models lists them)")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise invalid("messages", "must be a non-empty list of chat messages")
    if len(messages) > 64:
        raise invalid("messages", f"has {len(messages)} messages; the limit is 64")
    out = [_shield_message(m, f"messages[{i}]") for i, m in enumerate(messages)]
    params = body.get("params") or {}
    if not isinstance(params, dict):
        raise invalid("params", "must be an object")
    request = {"messages": [m for m in out if m is not None]}
    request.update({k: params[k] for k in ("threshold", "rationale") if k in params})
    return shield, request


def _shield_message(message: object, where: str) -> dict | None:
    if not isinstance(message, dict):
        raise invalid(where, "must be an object with 'role' and 'content'")
    role = message.get("role")
    if role == "system":
        return None
    if role not in SHIELD_ROLES:
        raise invalid(f"{where}.role", f"must be 'user', 'assistant' or 'system', got {role!r}"[:160])
    content = message.get("content")
    if isinstance(content, str):
        return {"role": role, "content": [{"type": "text", "text": content}]}
    if not isinstance(content, list):
        raise invalid(f"{where}.content", "must be a string or a list of content parts")
    if len(content) > MAX_PARTS:
        raise invalid(f"{where}.content", f"has {len(content)} parts; the limit is {MAX_PARTS}")
    return {"role": role, "content": [_shield_part(p, f"{where}.content[{j}]") for j, p in enumerate(content)]}


def _shield_part(part: object, where: str) -> dict:
    """OpenAI chat parts (text, image_url) and Llama Stack's (text, image {url: {uri}} or {data})."""
    if not isinstance(part, dict):
        raise invalid(f"{where}.type", "must be 'text', 'image_url' or 'image', got None")
    kind = part.get("type")
    if kind == "text":
        return {"type": "text", "text": part.get("text")}
    if kind == "image_url":
        url = part.get("image_url")
        return image_part(url.get("url") if isinstance(url, dict) else url, f"{where}.image_url.url")
    if kind == "image":
        image = part.get("image")
        if isinstance(image, dict) and isinstance(image.get("data"), str):
            return {"type": "image", "data": image["data"]}
        url = image.get("url") if isinstance(image, dict) else None
        return image_part(url.get("uri") if isinstance(url, dict) else url, f"{where}.image.url.uri")
    raise invalid(f"{where}.type", f"must be 'text', 'image_url' or 'image', got {kind!r}"[:160])

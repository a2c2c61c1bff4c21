"""The library's own request and verdict types.

Every entry point (CLI, gRPC, Python callers) converts its wire format into these frozen
dataclasses through :mod:`guardedge.runtime.requests`, which validates on the way in; the
families and the engine only ever see validated values.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Callable, Literal

if TYPE_CHECKING:
    import PIL.Image

Role = Literal["user", "assistant"]
VerdictKind = Literal["safe", "unsafe", "unparseable"]


@dataclass(frozen=True)
class ImageInput:
    """A request image: its encoded bytes and what its header says, or its decoded RGB pixels.

    runtime/images.py's ``probe_image`` makes one from the header (``data`` and the fields below, no
    pixels); ``decode_image`` gives the pixels and drops ``data``; ``GuardRequest.without_pixels``
    drops both once the architecture has encoded the image. ``width``/``height`` are the image as the
    model sees it (after EXIF orientation); an ImageInput built from pixels alone reads them from
    the image (``size``).
    """

    image: PIL.Image.Image | None = None  # RGB, once decoded (PIL is imported for type checking only)
    source: str = ""  # "path:/x.png" or "data" — for error messages and logs, never the bytes
    data: bytes | None = field(default=None, repr=False)  # the encoded image, until decoded
    format: str = ""  # PNG, JPEG, WEBP, GIF, BMP
    mode: str = ""  # Pillow's mode of the encoded image (RGB, P, RGBA, L, ...)
    width: int = 0
    height: int = 0
    frames: int = 1
    orientation: int = 1  # EXIF orientation read from the header (applied when decoding)
    transparent: bool = False  # has an alpha channel or a transparent colour (flattened onto grey)
    where: str = ""  # the request field it came from, for errors found when decoding

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) as the model sees it."""
        if self.width:
            return self.width, self.height
        if self.image is None:
            return 0, 0
        return self.image.size

    def without_pixels(self) -> ImageInput:
        """What is left once the image is encoded: its header facts and source, no bytes, no pixels."""
        width, height = self.size
        return replace(self, image=None, data=None, width=width, height=height)


@dataclass(frozen=True)
class Part:
    """One content part: text, or the conversation's image."""

    type: Literal["text", "image"]
    text: str = ""
    image: ImageInput | None = None


@dataclass(frozen=True)
class Message:
    role: Role
    content: tuple[Part, ...]


@dataclass(frozen=True)
class GuardRequest:
    """A validated classification request.

    ``categories`` is None for the family's defaults; otherwise it replaces them entirely, in order.
    ``threshold`` (optional) makes the request unsafe iff P(unsafe) >= threshold.
    ``rationale`` asks a family that writes one (LlavaGuard) for it; otherwise decoding stops
    once the verdict and category are known.
    """

    messages: tuple[Message, ...]
    categories: tuple[tuple[str, str], ...] | None = None
    excluded_category_keys: tuple[str, ...] = ()
    request_id: str = ""
    threshold: float | None = None
    rationale: bool = False
    # The family's policy for this request (what its ``policy(request)`` computes: the categories as the
    # prompt shows them, exclusions applied), resolved once by the engine at prepare and carried to
    # the parser, the decode checks and the category scores. None until then.
    policy: object = field(default=None, compare=False, repr=False)

    @property
    def has_image(self) -> bool:
        return any(p.type == "image" for m in self.messages for p in m.content)

    def map_text(self, fn: Callable[[str], str]) -> GuardRequest:
        """The request with ``fn`` applied to every string a caller wrote into the prompt.

        Message text, category codes and descriptions, excluded codes (mapped like the codes they
        name). A field added to requests that reaches the prompt must be mapped here too: the
        control-token guarantee (runtime/prompt_tokens.py) relies on it.
        """
        messages = tuple(
            Message(m.role, tuple(replace(p, text=fn(p.text)) if p.type == "text" else p for p in m.content))
            for m in self.messages
        )
        categories = None if self.categories is None else tuple((fn(k), fn(v)) for k, v in self.categories)
        return replace(
            self, messages=messages, categories=categories,
            excluded_category_keys=tuple(fn(k) for k in self.excluded_category_keys),
            policy=None,  # the mapped request's policy is its own (its descriptions are mapped too)
        )

    @property
    def images(self) -> tuple[ImageInput, ...]:
        """Every image of the conversation, in the order the turns hold them."""
        return tuple(p.image for m in self.messages for p in m.content if p.type == "image" and p.image is not None)

    @property
    def image(self) -> ImageInput | None:
        """The first image (None without one)."""
        images = self.images
        return images[0] if images else None

    def without_pixels(self) -> GuardRequest:
        """The request with its image's pixels and encoded bytes dropped (source and size kept),
        once the architecture has encoded it.

        A queued request then holds its compact tiles only, not the decoded image (4 bytes per
        pixel in PIL: 8.3 MB for 1920x1080, 144 MB at the 36 Mpx cap) nor a copy of its bytes.
        """
        if not self.has_image:
            return self
        messages = tuple(
            Message(m.role, tuple(replace(p, image=p.image.without_pixels()) if p.image else p for p in m.content))
            for m in self.messages
        )
        return replace(self, messages=messages)


@dataclass(frozen=True)
class Timings:
    """Seconds spent per stage for one request.

    ``preprocess_wait``: waiting for a preprocessing worker (the server's workers are shared by its
    models); ``queue``: waiting for a batch; ``inference``: from the batch's start to this request's
    answer (a row is answered as soon as it is complete, runtime/engine.py).
    """

    queue: float = 0.0
    preprocess: float = 0.0
    inference: float = 0.0
    total: float = 0.0
    preprocess_wait: float = 0.0


@dataclass(frozen=True)
class Verdict:
    """What the guard decided for one request.

    ``unsafe_probability`` is P(first answer token = the family's 'unsafe' token); ``raw_output`` is
    the answer text as the model produced it (or "safe" when decoding stopped early on a safe
    first token). ``error`` explains an unparseable answer.
    """

    verdict: VerdictKind
    categories: tuple[str, ...]
    unsafe_probability: float
    safe_probability: float
    raw_output: str
    timings: Timings = field(default_factory=Timings)
    error: str = ""
    request_id: str = ""
    rationale: str = ""
    # (code, score) per category of the request's policy, in policy order (runtime/scores.py for
    # generative families: P(unsafe) x P(code named first | unsafe); label families: P(label) per
    # policy). Not independent multi-label probabilities; docs/api.md defines them per family.
    category_scores: tuple[tuple[str, float], ...] = ()

    def to_json(self) -> dict:
        return {
            "request_id": self.request_id,
            "verdict": self.verdict,
            "categories": list(self.categories),
            "unsafe_probability": self.unsafe_probability,
            "safe_probability": self.safe_probability,
            "raw_output": self.raw_output,
            "error": self.error,
            **({"rationale": self.rationale} if self.rationale else {}),
            "category_scores": dict(self.category_scores),
            "timings": {
                "queue_s": self.timings.queue,
                "preprocess_s": self.timings.preprocess,
                "inference_s": self.timings.inference,
                "total_s": self.timings.total,
                "preprocess_wait_s": self.timings.preprocess_wait,
            },
        }

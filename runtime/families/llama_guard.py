"""The Llama Guard format, parameterised: what Llama Guard 3 Vision and Llama Guard 4 share.

Every Llama Guard generation renders one user turn that wraps the whole conversation: a task
sentence naming the checked role, the policy between ``<BEGIN UNSAFE CONTENT CATEGORIES>`` markers,
the conversation as ``User: ...`` / ``Agent: ...`` lines, an instruction block, then an open
assistant header; the answer is ``safe`` or ``unsafe\\nS1,S3``. What differs between generations is
data — header tokens, the sentences' exact words, the default categories, where images go, the
stop tokens — and lives in a :class:`LlamaGuardFormat`. A family is ``LlamaGuard(FORMAT)`` (see
llama_guard_3_vision.py); a generation that places images differently overrides one method.

The rules shared by every generation live here once: the frame check on custom policies, the
answer parser (excluded codes are no violation, as Meta's llama-stack shield treats them), the
format drafts, the category-code scoring position.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, cast

from guardedge.runtime.errors import FieldViolation, InvalidRequest
from guardedge.runtime.families.base import LabelVerdict, ParsedAnswer, ScoringSpec, verdict_label
from guardedge.runtime.normalize import lines, normalize, search
from guardedge.runtime.requests import category_field
from guardedge.runtime.types import GuardRequest, Message

ROLE_LABELS = {"user": "User", "assistant": "Agent"}


@dataclass(frozen=True)
class LlamaGuardFormat:
    """One Llama Guard generation's prompt and answer format.

    ``task`` and ``instructions`` take ``{role}`` (``User`` or ``Agent``). ``images`` says where an
    image goes: ``"head"`` — one ``image_text`` before the task sentence whatever turn holds it
    (Llama Guard 3 Vision: one image per conversation); ``"in_turn"`` — each image where it occurs
    in its message's line (Llama Guard 4).
    """

    header: str
    image_token: str
    task: str
    instructions: str
    categories: tuple[tuple[str, str], ...]
    stop_tokens: tuple[str, ...]
    answer_prefix: str = "\n\n"
    images: Literal["head", "in_turn"] = "head"
    image_text: str = "{image} "
    max_images: int = 1
    # Longest answer: "unsafe\n" + every code; 64 tokens bound a hallucinating model.
    max_answer_tokens: int = 64


_CODE_LIST = re.compile(r"^[^\s,]+(\s*,\s*[^\s,]+)*$")
# Text in a category that would rewrite the prompt's frame: the block markers (also spaced or
# cased differently, and the Sept 2024 "UNSAFECONTENT" spelling) and the frame's own sentences.
# Matched on runtime/normalize.py's form (case folded, one kind of quote, dash and space), so
# look-alikes (fullwidth letters, NBSP, zero-width characters) match too.
_FRAME = re.compile(
    r"<\s*(BEGIN|END)\s+UNSAFE\s*CONTENT\s+CATEGORIES\s*>|<\s*(BEGIN|END)\s+CONVERSATION\s*>"
    r"|Task:\s*Check\s+if\s+there\s+is\s+unsafe\s+content|Provide\s+your\s+safety\s+assessment\s+for"
    r"|First\s+line\s+must\s+read|a\s+second\s+line\s+must\s+include\s+a\s+comma-separated\s+list",
    re.IGNORECASE,
)
# A description line that starts a category entry of its own ("S2: ...") would add a category
# the policy does not have: the answer could then name a code the caller never defined.
_ENTRY = re.compile(r"\s*([^\s,:]+):(\s|$)")
_CODE_SHAPE = re.compile(r"[^\W\d_]{1,3}[0-9]{1,3}")  # a code's shape in any script, digits folded


# OpenAI moderation names each default code answers (docs/api.md "OpenAI category mapping"): a code
# feeds a name where its definition (REFERENCE.md §1.6, the MLCommons hazards) covers that name's.
# S5-S8 and S13 have no OpenAI name; harassment(/threatening), hate/threatening and violence/graphic
# have no code, so the HTTP API answers them null. Llama Guard 4 adds S14 (no OpenAI name).
MODERATION_CATEGORIES: dict[str, tuple[str, ...]] = {
    "S1": ("violence", "illicit", "illicit/violent"),
    "S2": ("illicit",),
    "S3": ("sexual", "illicit"),
    "S4": ("sexual", "sexual/minors"),
    "S9": ("illicit", "illicit/violent"),
    "S10": ("hate",),
    "S11": ("self-harm", "self-harm/instructions", "self-harm/intent"),
    "S12": ("sexual",),
}


class LlamaGuard:
    """A Llama Guard family over one :class:`LlamaGuardFormat` (subclasses set ``name`` and ``FORMAT``)."""

    name: str = ""
    FORMAT: LlamaGuardFormat
    requires_image = False
    # Llama Guard 3 and 4 share the MLCommons codes S1-S13 (LG4's S14 has no OpenAI name).
    moderation_categories = MODERATION_CATEGORIES

    def __init__(self, fmt: LlamaGuardFormat | None = None):
        self.format = fmt or self.FORMAT
        self.image_token = self.format.image_token
        self.max_images = self.format.max_images
        self.scoring = ScoringSpec(
            # The first generated token is always "\n\n"; the verdict token follows it (REFERENCE §2).
            answer_prefix=self.format.answer_prefix,
            safe_token="safe",
            unsafe_token="unsafe",
            stop_tokens=self.format.stop_tokens,
            max_new_tokens=self.format.max_answer_tokens,
            # "unsafe" is followed by "\nS<n>"; each code by ",S<m>" or the end of the answer.
            drafts=((r"unsafe\Z", "\nS"), (r"\nS\d+(,S\d+)*\Z", ",S")),
        )

    # -- policy -----------------------------------------------------------------------------------

    def default_categories(self) -> tuple[tuple[str, str], ...]:
        return self.format.categories

    def head_answers(self) -> tuple[str, ...]:
        """The verdict-only answers under the default policy: their tokens' output rows stay float
        in a quantized head (docs/decisions/0012)."""
        codes = [code for code, _ in self.format.categories]
        stop = self.scoring.stop_tokens[0]
        # "safe", "unsafe" + each code alone and all of them in a list (the "," tokens between codes).
        return ("safe" + stop, *(f"unsafe\n{code}{stop}" for code in codes), "unsafe\n" + ",".join(codes) + stop)

    @property
    def label_space(self) -> tuple[str, ...]:
        return tuple(code for code, _ in self.format.categories)

    def parse_label(self, label: object) -> tuple[LabelVerdict, tuple[str, ...]]:
        # Custom policies name their own codes, so any code is accepted here; the metrics compare codes as given.
        return verdict_label(label)

    def policy(self, request: GuardRequest) -> tuple[tuple[str, str], ...]:
        """The categories that appear in the prompt, in prompt order (the engine resolves it once at
        prepare; a request carrying it is not resolved again)."""
        if request.policy is not None:
            return cast("tuple[tuple[str, str], ...]", request.policy)  # what this method returned at prepare
        categories = request.categories if request.categories is not None else self.format.categories
        excluded = set(request.excluded_category_keys)
        return tuple((k, v) for k, v in categories if k not in excluded)

    def check(self, request: GuardRequest) -> None:
        """Refuse policy text that would forge the prompt's structure (InvalidRequest naming the category).

        Multi-line descriptions are accepted as Meta writes them (``name\\ndescription`` lines);
        control-token spellings anywhere stay ordinary text (runtime/prompt_tokens.py).
        """
        if request.categories is None:
            return
        codes = {code for code, _ in request.categories}
        problems = [
            FieldViolation(category_field(code), problem)
            for code, text in request.categories
            if (problem := _forged_frame(text, codes))
        ]
        if problems:
            raise InvalidRequest(problems)

    # -- prompt -----------------------------------------------------------------------------------

    def checked_role(self, request: GuardRequest) -> str:
        # Odd number of messages: the last is the user's (prompt classification); even: the agent's.
        return "User" if len(request.messages) % 2 == 1 else "Agent"

    def prompt_keys(self, request: GuardRequest) -> tuple[str, ...]:
        return ("",)

    def render(self, request: GuardRequest, key: str = "") -> str:
        fmt = self.format
        role = self.checked_role(request)
        out = [fmt.header]
        if fmt.images == "head" and request.has_image:
            out.append(self._image())
        out.append(fmt.task.format(role=role))
        out.append("<BEGIN UNSAFE CONTENT CATEGORIES>\n")
        out.extend(f"{key}: {text}\n" for key, text in self.policy(request))
        out.append("<END UNSAFE CONTENT CATEGORIES>\n\n")
        out.append("<BEGIN CONVERSATION>\n\n")
        for message in request.messages:
            out.extend(self.turn_lines(message))
        out.append("<END CONVERSATION>\n\n")
        out.append(fmt.instructions.format(role=role))
        return "".join(out)

    def turn_lines(self, message: Message) -> list[str]:
        """One line per text part (``User: text``); with ``images="in_turn"``, images go in the
        line of the text part they precede (or a line of their own at the end of the message)."""
        label = ROLE_LABELS[message.role]
        lines, images = [], ""
        for part in message.content:
            if part.type == "image":
                if self.format.images == "in_turn":
                    images += self._image()
                continue
            # jinja's `trim` is Python's str.strip().
            lines.append(f"{label}: {images}{part.text.strip()}\n\n")
            images = ""
        if images:
            lines.append(f"{label}: {images.rstrip()}\n\n")
        return lines

    def _image(self) -> str:
        return self.format.image_text.format(image=self.format.image_token)

    def template_inputs(self, request: GuardRequest) -> dict:
        """What the model card passes Meta's chat template (messages, categories, excluded codes)."""
        from guardedge.runtime.chat_template import to_hf_messages

        kwargs: dict = {"messages": to_hf_messages(request), "excluded_category_keys": list(request.excluded_category_keys)}
        if request.categories is not None:
            kwargs["categories"] = dict(request.categories)
        return kwargs

    def template_probes(self) -> tuple[tuple[str, GuardRequest], ...]:
        from guardedge.runtime.families.model_template import PROBES

        return PROBES

    # -- answer -----------------------------------------------------------------------------------

    def parse(self, answer: str, request: GuardRequest) -> ParsedAnswer:
        text = answer
        for stop in self.scoring.stop_tokens:
            text = text.split(stop, 1)[0]
        lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
        if not lines:
            return ParsedAnswer("unparseable", error="empty answer")
        head, rest = lines[0], lines[1:]
        if head == "safe":
            if rest:
                return ParsedAnswer("unparseable", error=f"categories after 'safe': {rest[0][:40]!r}")
            return ParsedAnswer("safe")
        if head != "unsafe":
            return ParsedAnswer("unparseable", error=f"first line is {head[:40]!r}, not 'safe' or 'unsafe'")
        if not rest:
            # The verdict is clear even though the category line is missing.
            return ParsedAnswer("unsafe")
        if len(rest) > 1 or not _CODE_LIST.match(rest[0]):
            return ParsedAnswer("unparseable", error="second line is not a comma-separated list of category codes")
        codes = tuple(dict.fromkeys(c.strip() for c in rest[0].split(",")))
        # An excluded category is never a violation, even when the guard names it: Meta's own
        # Llama Guard shield (llama-stack) treats an answer naming only excluded codes as safe.
        excluded = set(request.excluded_category_keys)
        kept = tuple(c for c in codes if c not in excluded)
        allowed = {key for key, _ in self.policy(request)}
        unknown = [c for c in kept if c not in allowed]
        if unknown:
            return ParsedAnswer("unparseable", kept, error=f"categories not in the policy: {', '.join(unknown)}")
        return ParsedAnswer("unsafe", kept) if kept else ParsedAnswer("safe")

    def category_answers(self, request: GuardRequest) -> tuple[tuple[str, str], ...]:
        """(code, the answer text after ``unsafe`` that names it first) per category of the request's
        policy: what per-category scores are read from (runtime/scores.py)."""
        return tuple((code, f"\n{code}") for code, _ in self.policy(request))


def _forged_frame(text: str, codes: set[str]) -> str | None:
    marker = search(_FRAME, text)
    if marker:
        return f"description contains {marker!r}, which would rewrite the prompt's frame"
    folded = {normalize(c) for c in codes}
    for line, normalized in lines(text)[1:]:
        entry = _ENTRY.match(line) or _ENTRY.match(normalized)
        if entry and ((code := normalize(entry.group(1))) in folded or _CODE_SHAPE.fullmatch(code)):
            return (
                f"description line {line[:60]!r} starts a category entry ({entry.group(1)}:); "
                "a description cannot add categories"
            )
    return None

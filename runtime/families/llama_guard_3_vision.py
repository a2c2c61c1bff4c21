"""Llama Guard 3 Vision (Meta, Mllama): the exact prompt and answer formats.

The prompt is what the official chat template renders (shared/REFERENCE.md §1, the
``chat_template.json`` published with meta-llama/Llama-Guard-3-11B-Vision): one user turn that
wraps the whole conversation, then an open assistant header. The answer is ``\\n\\nsafe`` or
``\\n\\nunsafe\\nS1,S10`` followed by ``<|eot_id|>`` (REFERENCE.md §2).

Run ``guardedge render --family llama-guard-3-vision --input REQ.json`` to see a prompt.
"""

from __future__ import annotations

import re
from typing import Literal

from guardedge.runtime.errors import FieldViolation, InvalidRequest
from guardedge.runtime.families.base import CheckSplit, ParsedAnswer, ScoringSpec, verdict_label
from guardedge.runtime.requests import category_field
from guardedge.runtime.types import GuardRequest

# REFERENCE.md §1.6, in order.
DEFAULT_CATEGORIES: tuple[tuple[str, str], ...] = (
    ("S1", "Violent Crimes."),
    ("S2", "Non-Violent Crimes."),
    ("S3", "Sex Crimes."),
    ("S4", "Child Exploitation."),
    ("S5", "Defamation."),
    ("S6", "Specialized Advice."),
    ("S7", "Privacy."),
    ("S8", "Intellectual Property."),
    ("S9", "Indiscriminate Weapons."),
    ("S10", "Hate."),
    ("S11", "Self-Harm."),
    ("S12", "Sexual Content."),
    ("S13", "Elections."),
)

HEADER = "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n"
IMAGE_TOKEN = "<|image|>"
# "according our" (sic) is what the model was trained on.
TASK = (
    "Task: Check if there is unsafe content in '{role}' messages in conversations "
    "according our safety policy with the below categories.\n\n"
)
INSTRUCTIONS = (
    "Provide your safety assessment for ONLY THE LAST {role} message in the above conversation:\n"
    " - First line must read 'safe' or 'unsafe'.\n"
    " - If unsafe, a second line must include a comma-separated list of violated categories. "
    "<|eot_id|><|start_header_id|>assistant<|end_header_id|>"
)
ROLE_LABELS = {"user": "User", "assistant": "Agent"}
# Longest answer: "unsafe\n" + 13 codes; 64 tokens bound a hallucinating model.
MAX_ANSWER_TOKENS = 64
_CODE_LIST = re.compile(r"^[^\s,]+(\s*,\s*[^\s,]+)*$")
# Text in a category that would rewrite the prompt's frame: the block markers (also spaced or
# cased differently, and the Sept 2024 "UNSAFECONTENT" spelling) and the frame's own sentences.
_FRAME = re.compile(
    r"<\s*(BEGIN|END)\s+UNSAFE\s*CONTENT\s+CATEGORIES\s*>|<\s*(BEGIN|END)\s+CONVERSATION\s*>"
    r"|Task:\s*Check if there is unsafe content|Provide your safety assessment for",
    re.IGNORECASE,
)
# A description line that starts a category entry of its own ("S2: ...") would add a category
# the policy does not have: the answer could then name a code the caller never defined.
_ENTRY = re.compile(r"\s*([^\s,:]+):(\s|$)")
_CODE_SHAPE = re.compile(r"[A-Z]{1,3}\d{1,3}")


class LlamaGuard3Vision:
    """The ``llama-guard-3-vision`` family."""

    name = "llama-guard-3-vision"
    image_token = IMAGE_TOKEN
    requires_image = False
    scoring = ScoringSpec(
        # The first generated token is always "\n\n"; the verdict token follows it (REFERENCE §2).
        answer_prefix="\n\n",
        safe_token="safe",
        unsafe_token="unsafe",
        stop_tokens=("<|eot_id|>", "<|eom_id|>", "<|end_of_text|>"),
        max_new_tokens=MAX_ANSWER_TOKENS,
        # "unsafe" is followed by "\nS<n>"; each code by ",S<m>" or the end of the answer.
        drafts=((r"unsafe\Z", "\nS"), (r"\nS\d+(,S\d+)*\Z", ",S")),
    )

    def default_categories(self) -> tuple[tuple[str, str], ...]:
        return DEFAULT_CATEGORIES

    @property
    def label_space(self) -> tuple[str, ...]:
        return tuple(code for code, _ in DEFAULT_CATEGORIES)

    def warmup_request(self) -> dict:
        return {"messages": [{"role": "user", "content": "warm-up"}], "request_id": "warmup"}

    def smoke_requests(self) -> list[dict]:
        from guardedge.runtime.demo.samples import samples  # lazy: generated images need PIL

        return [{k: v for k, v in case.items() if k != "expected"} for case in samples()]

    def check_examples(self, split: CheckSplit, n: int) -> list[dict]:
        from guardedge.runtime.demo.checksets import examples  # lazy: generated images need PIL

        return examples(split, n)

    def head_answers(self) -> tuple[str, ...]:
        codes = [code for code, _ in DEFAULT_CATEGORIES]
        stop = self.scoring.stop_tokens[0]
        # "safe", "unsafe" + each code alone and all of them in a list (the "," tokens between codes).
        return ("safe" + stop, *(f"unsafe\n{code}{stop}" for code in codes), "unsafe\n" + ",".join(codes) + stop)

    def parse_label(self, label: object) -> tuple[str, tuple[str, ...]]:
        # Custom policies name their own codes, so any code is accepted here; the metrics compare codes as given.
        return verdict_label(label)

    def policy(self, request: GuardRequest) -> tuple[tuple[str, str], ...]:
        """The categories that appear in the prompt, in prompt order."""
        categories = request.categories if request.categories is not None else DEFAULT_CATEGORIES
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

    def checked_role(self, request: GuardRequest) -> str:
        # Odd number of messages: the last is the user's (prompt classification); even: the agent's.
        return "User" if len(request.messages) % 2 == 1 else "Agent"

    def render(self, request: GuardRequest) -> str:
        role = self.checked_role(request)
        out = [HEADER]
        if request.has_image:
            out.append(IMAGE_TOKEN + " ")
        out.append(TASK.format(role=role))
        out.append("<BEGIN UNSAFE CONTENT CATEGORIES>\n")
        out.extend(f"{key}: {text}\n" for key, text in self.policy(request))
        out.append("<END UNSAFE CONTENT CATEGORIES>\n\n")
        out.append("<BEGIN CONVERSATION>\n\n")
        for message in request.messages:
            label = ROLE_LABELS[message.role]
            for part in message.content:
                if part.type == "text":
                    # jinja's `trim` is Python's str.strip().
                    out.append(f"{label}: {part.text.strip()}\n\n")
        out.append("<END CONVERSATION>\n\n")
        out.append(INSTRUCTIONS.format(role=role))
        return "".join(out)

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


def _forged_frame(text: str, codes: set[str]) -> str | None:
    marker = _FRAME.search(text)
    if marker:
        return f"description contains {marker.group(0)!r}, which would rewrite the prompt's frame"
    for line in text.splitlines()[1:]:
        entry = _ENTRY.match(line)
        if entry and (entry.group(1) in codes or _CODE_SHAPE.fullmatch(entry.group(1))):
            return (
                f"description line {line[:60]!r} starts a category entry ({entry.group(1)}:); "
                "a description cannot add categories"
            )
    return None

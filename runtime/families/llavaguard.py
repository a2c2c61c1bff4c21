"""LlavaGuard v1.2 (LLaVA-OneVision, Qwen2): the exact prompt, its policy and the JSON answer.

The prompt frame is the checkpoint's chat template, which follows its architecture (``FRAMES``;
:meth:`LlavaGuard.for_model_type` picks it from the model directory's ``model_type``):

- LLaVA-OneVision (LlavaGuard v1.2 ``-hf``): one user turn, the image first, the policy as the
  text, no system turn: ``<|im_start|>user\\n<image>\\n{POLICY}<|im_end|>\\n<|im_start|>assistant\\n``.
- Qwen2.5-VL (QwenGuard v1.2): Qwen2.5-VL's chat template with its default system turn and the
  image between its vision tokens, the policy right after it:
  ``<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n<|im_start|>user\\n<|vision_start|><|image_pad|><|vision_end|>{POLICY}<|im_end|>\\n<|im_start|>assistant\\n``
  (templates/llavaguard-qwen2_5_vl.jinja, written from the published template; QwenGuard's own
  repository was not readable here, so a directory's own template renders when it has one:
  ``prompt_source = "model"``).
The policy is built from its parts (``data/llavaguard_v1_2.json``: the opening sentence, each
category's header and default / "declared as non-violating" / "declared as sensitive" texts, the
response template, as in the LlavaGuard repository's taxonomy code) the way the repository
builds it::

    policy_start + Σ (header + ": \\n" + text + "\\n") + response_template

An excluded category keeps its header and gets its "declared as non-violating" text, the swap
v1.2 was trained with (the model then answers Safe). The answer is
``json.dumps({"rating": ..., "category": ..., "rationale": ...}, indent=4)``; its parsing and
the evaluation labels live in ``llavaguard_answer.py``.

Run ``guardedge render --family llavaguard --input REQ.json`` to see a prompt.
"""

from __future__ import annotations

import base64
import io
import json
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Literal, cast

from guardedge.runtime.errors import FieldViolation, InvalidRequest, invalid
from guardedge.runtime.families import llavaguard_answer as answers
from guardedge.runtime.families.base import ParsedAnswer, ScoringSpec, load_smoke
from guardedge.runtime.normalize import lines, normalize, search
from guardedge.runtime.requests import category_field
from guardedge.runtime.types import GuardRequest, Message, Part


@dataclass(frozen=True)
class Frame:
    """How one architecture's chat template wraps the policy: ``head + POLICY + tail``."""

    image_token: str  # the placeholder the architecture expands
    head: str
    tail: str
    prompt_source: Literal["builtin", "model"]  # "model": a directory's own template renders when present


ONEVISION = Frame("<image>", "<|im_start|>user\n<image>\n", "<|im_end|>\n<|im_start|>assistant\n", "builtin")
# Qwen2.5-VL's chat template (as published with Qwen2.5-VL-Instruct, which QwenGuard v1.2 is tuned
# from; the model card renders [image, policy] with processor.apply_chat_template): a system turn
# when the conversation has none, the image as <|vision_start|><|image_pad|><|vision_end|> with no
# newline, then the text.
QWEN2_5_VL = Frame("<|image_pad|>",
                   "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
                   "<|vision_start|><|image_pad|><|vision_end|>",
                   "<|im_end|>\n<|im_start|>assistant\n", "model")
FRAMES: dict[str, Frame] = {"llava_onevision": ONEVISION, "qwen2_5_vl": QWEN2_5_VL}
IMAGE_TOKEN = ONEVISION.image_token
NONE_APPLYING = "NA: None applying"
# The repository's generated swap text; its nine default texts follow it (O2's has a double space).
NON_VIOLATING = (
    "Category {code} is declared as non-violating. Therefore, we do not provide any restrictions "
    "for this category and allow any content of this category e.g.\n"
)
MAX_NAME_CHARS = 48  # the name is decoded into every answer; long names would outgrow the verdict bound
_CODE_SHAPE = re.compile(r"[A-Z]{1,3}[0-9]{1,3}")  # ASCII digits: \d would take O١ or O１
_NAME_FORBIDDEN = set('"\\|<>')  # would break the JSON template's str<"..."|"..."> list or the answer's string
# Caller text that would rewrite the policy's frame: its opening sentences, the assessment steps and
# JSON template, and the swap sentences the family writes itself for excluded categories. Matched
# on runtime/normalize.py's form (case folded, one kind of quote, dash and space), so look-alikes match too.
_FRAME = re.compile(
    r"provide\s+a\s+safety\s+assessment\s+for\s+the\s+content|determine\s+compliance\s+or\s+violation"
    r"|reviewing\s+the\s+following\s+policy\s+categor|assessment\s+steps\s*:|select\s+a\s+safety\s+\"?rating"
    r"|assign\s+a\s+policy\s+\"?category|provide\s+a\s+\"?rationale\"?\s*\.|if\s+none\s+of\s+the\s+policy\s+categories"
    r"|use\s+the\s+following\s+json\s+template|\"\s*(rating|category|rationale)\s*\"\s*:|str\s*<"
    r"|is\s+declared\s+as\s+(non[-\s]?violating|sensitive)|we\s+do\s+not\s+(provide\s+any\s+restrictions|permit\s+any\s+content)",
    re.IGNORECASE,
)
_ENTRY = re.compile(r"\s*([^\s,:]+)\s*:(\s|$)")
_ENTRY_SHAPE = re.compile(r"[^\W\d_]{1,3}[0-9]{1,3}")  # a code's shape in any script (Cyrillic О1 too), digits folded


@cache
def parts() -> dict:
    """The v1.2 policy parts: policy_start, response_template, categories {code: header/default/...}."""
    text = resources.files("guardedge.runtime.families").joinpath("data/llavaguard_v1_2.json").read_text("utf-8")
    return json.loads(text)


def default_headers() -> tuple[str, ...]:
    return tuple(c["header"] for c in parts()["categories"].values())


def category_list(headers: tuple[str, ...]) -> str:
    """The response template's ``"O1: ..."|...|"NA: None applying"`` list (the repository's cat_prompt)."""
    return "|".join(f'"{h}"' for h in (*headers, NONE_APPLYING))


def response_template(headers: tuple[str, ...]) -> str:
    template = parts()["response_template"]
    return template.replace(category_list(default_headers()), category_list(headers), 1)


def declared_non_violating(code: str, guideline: str) -> str:
    """A caller's guideline as a "declared as non-violating" text, by the rule the repository's follow.

    Heading lines ("Should not:", "Can:") go, every other line becomes a `` - `` item.
    """
    items = []
    for line in guideline.split("\n"):
        if not line.strip() or (line.rstrip().endswith(":") and not line.startswith("- ")):
            continue
        items.append(line[2:] if line.startswith("- ") else line.strip())
    return NON_VIOLATING.format(code=code) + "".join(f" - {item}\n" for item in items) + " "


def split_category(text: str) -> tuple[str, str]:
    """A caller's category text ``"Name\\nguidelines"`` as (name, guidelines); verbatim."""
    name, _, guideline = text.partition("\n")
    return name, guideline


# OpenAI moderation names each v1.2 code answers (docs/api.md "OpenAI category mapping"; the same
# for QwenGuard, which is this family). O9 (disasters) has no OpenAI name; harassment/threatening,
# hate/threatening, sexual/minors and violence/graphic have no code (answered null).
MODERATION_CATEGORIES: dict[str, tuple[str, ...]] = {
    "O1": ("hate", "harassment"),
    "O2": ("violence",),
    "O3": ("sexual",),
    "O4": ("sexual",),
    "O5": ("illicit",),
    "O6": ("illicit", "illicit/violent"),
    "O7": ("self-harm", "self-harm/instructions", "self-harm/intent"),
    "O8": ("violence",),
}


class LlavaGuard:
    """The ``llavaguard`` family (v1.2 policy and answer) in one architecture's prompt frame."""

    name = "llavaguard"
    moderation_categories = MODERATION_CATEGORIES
    requires_image = True
    max_images = 1
    scoring = ScoringSpec(
        answer_prefix='{\n    "rating": "',
        safe_token="Safe",
        unsafe_token="Unsafe",
        stop_tokens=("<|im_end|>", "<|endoftext|>"),
        # After "Safe"/"Unsafe": '",\n    "category": "' + a header + '",\n    "rationale"'
        # (verdict_stop): 64 tokens cover the default headers with room to spare; a request whose
        # headers need more gets more (verdict_texts, Preprocessor.answer_budget).
        max_new_tokens=64,
        decode_when_safe=True,  # the category (and the rationale, when asked for) follows either rating
        drafts=answers.drafts(default_headers()),
        verdict_stop=answers.VERDICT_STOP,
        max_rationale_tokens=320,
    )

    def __init__(self, frame: Frame = ONEVISION):
        self.frame = frame
        self.image_token = frame.image_token
        self.prompt_source = frame.prompt_source

    def for_model_type(self, model_type: str | None) -> LlavaGuard:
        """The family in the frame of ``model_type``'s checkpoints (QwenGuard: Qwen2.5-VL's template);
        an architecture without a frame of its own keeps this one."""
        frame = FRAMES.get(model_type or "", self.frame)
        return self if frame == self.frame else LlavaGuard(frame)

    def default_categories(self) -> tuple[tuple[str, str], ...]:
        """(code, "Name\\nguidelines") per category: passed back as ``categories`` they render the default policy."""
        return tuple((code, c["header"][len(code) + 2:] + "\n" + c["default"]) for code, c in parts()["categories"].items())

    @property
    def label_space(self) -> tuple[str, ...]:
        return tuple(parts()["categories"])

    def parse_label(self, label: dict) -> tuple[Literal["safe", "unsafe"], tuple[str, ...]]:
        return answers.parse_label(label, dict(zip(default_headers(), self.label_space)))

    def warmup_request(self) -> dict:
        from PIL import Image  # lazy: importing a family never imports PIL

        buffer = io.BytesIO()
        Image.new("RGB", (64, 64), (128, 128, 128)).save(buffer, format="PNG")
        image = {"type": "image", "data": base64.b64encode(buffer.getvalue()).decode("ascii")}
        return {"messages": [{"role": "user", "content": [image]}], "request_id": "warmup"}

    def smoke_requests(self) -> list[dict]:
        """Generated images under the default policy, an excluded category and a custom policy."""
        return load_smoke(self.name)

    def head_answers(self) -> tuple[str, ...]:
        return answers.verdict_texts(default_headers())

    def policy(self, request: GuardRequest) -> tuple[tuple[str, str, str], ...]:
        """(code, header, text) per category, in prompt order, excluded ones already swapped (the one
        the engine resolved at prepare when the request carries it)."""
        if request.policy is not None:
            return cast("tuple[tuple[str, str, str], ...]", request.policy)  # what this method returned at prepare
        excluded = set(request.excluded_category_keys)
        if request.categories is None:
            return tuple(
                (code, c["header"], c["non_violating"] if code in excluded else c["default"])
                for code, c in parts()["categories"].items()
            )
        out = []
        for code, text in request.categories:
            name, guideline = split_category(text)
            out.append((code, f"{code}: {name}", declared_non_violating(code, guideline) if code in excluded else guideline))
        return tuple(out)

    def policy_text(self, request: GuardRequest) -> str:
        categories = self.policy(request)
        body = "".join(f"{header}: \n{text}\n" for _, header, text in categories)
        return parts()["policy_start"] + body + response_template(tuple(h for _, h, _ in categories))

    def prompt_keys(self, request: GuardRequest) -> tuple[str, ...]:
        return ("",)

    def render(self, request: GuardRequest, key: str = "") -> str:
        # Message text is refused by check(): the model rates the image against the policy only.
        return self.frame.head + self.policy_text(request) + self.frame.tail

    def template_inputs(self, request: GuardRequest) -> dict:
        """What the model cards pass the chat template: the image, then the policy as the text."""
        content = [{"type": "image"}, {"type": "text", "text": self.policy_text(request)}]
        return {"messages": [{"role": "user", "content": content}], "add_generation_prompt": True}

    def template_probes(self) -> tuple[tuple[str, GuardRequest], ...]:
        """Requests a directory's template must render as ``render`` does (checked at load)."""
        image = Message("user", (Part("image"),))
        custom = (("O1", "Gambling\nShould not:\n- Show casino games."),)
        return (("the default policy", GuardRequest((image,))),
                ("an excluded category", GuardRequest((image,), excluded_category_keys=("O3",))),
                ("a custom policy", GuardRequest((image,), categories=custom)))

    def check(self, request: GuardRequest) -> None:
        """LlavaGuard's request rules: one image, no message text, a policy in the frame's shape."""
        if not request.has_image:
            raise invalid("messages", 'LlavaGuard rates an image: add an image part ({"type": "image", ...}) to the user message')
        if len(request.messages) != 1:
            raise invalid("messages", f"has {len(request.messages)} messages; LlavaGuard rates one user message holding the image")
        for j, part in enumerate(request.messages[0].content):
            if part.type == "text" and part.text.strip():
                raise invalid(
                    f"messages[0].content[{j}].text",
                    "LlavaGuard reads no message text, only the image and the policy; change the policy with 'categories'",
                )
        if request.categories is not None:  # excluded codes are checked once, by parse_request / the engine
            codes = {code for code, _ in request.categories}
            problems = [FieldViolation(category_field(c), p) for c, t in request.categories if (p := _category_problem(c, t, codes))]
            if problems:
                raise InvalidRequest(problems)

    def answer_viable(self, answer: str, request: GuardRequest) -> bool:
        """False once the answer has left the JSON every verdict starts with (see base.GuardFamily)."""
        return answers.viable(answer, self._headers(request))

    def category_answers(self, request: GuardRequest) -> tuple[tuple[str, str], ...]:
        """(code, the answer text after ``Unsafe`` that names it): per-category scores (runtime/scores.py)."""
        return tuple((code, answers.CATEGORY_KEY + header) for code, header, _ in self.policy(request))

    def verdict_texts(self, request: GuardRequest) -> tuple[str, ...]:
        """Every complete verdict-only answer the request's policy allows (see base.GuardFamily)."""
        return answers.verdict_texts(self._headers(request))

    def _headers(self, request: GuardRequest) -> tuple[str, ...]:
        return tuple(header for _, header, _ in self.policy(request))

    def parse(self, answer: str, request: GuardRequest) -> ParsedAnswer:
        legal = {header: code for code, header, _ in self.policy(request)}
        return answers.parse(answer, request, legal, self.scoring.stop_tokens)


def _category_problem(code: str, text: str, codes: set[str]) -> str | None:
    if not _CODE_SHAPE.fullmatch(code):
        return "code must look like the policy's own (O1, O12: capital letters then digits)"
    name, guideline = split_category(text)
    if not name or name != name.strip() or not name.isprintable():
        return 'text must be "Name\\nguidelines": a printable name line without spaces at its ends'
    if len(name) > MAX_NAME_CHARS:
        return f"name is {len(name)} characters; the limit is {MAX_NAME_CHARS}"
    if bad := sorted(set(name) & _NAME_FORBIDDEN):
        return f"name contains {''.join(bad)!r}, which the answer's JSON category string cannot hold verbatim"
    if not guideline.strip():
        return 'text must be "Name\\nguidelines": the guidelines after the name line are empty'
    if marker := search(_FRAME, text):
        return f"text contains {marker!r}, which would rewrite the policy's frame"
    folded = {normalize(c) for c in codes} | {"na"}
    for raw, line in lines(guideline):
        entry = _ENTRY.match(raw) or _ENTRY.match(line)
        if entry and ((code := normalize(entry.group(1))) in folded or _ENTRY_SHAPE.fullmatch(code)):
            return f"guideline line {raw[:60]!r} starts a category entry of its own; a category cannot add categories"
    return None

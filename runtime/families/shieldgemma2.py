"""ShieldGemma 2 (Google, Gemma 3 4B): an image scored against each policy as P(Yes).

One request fans out to one prompt per policy (``prompt_keys``): the three defaults, verbatim from
transformers' ``DEFAULT_SHIELDGEMMA2_POLICIES`` (``dangerous``, ``sexual``, ``violence``), or the
caller's ``categories`` {key: policy text}; ``excluded_category_keys`` are not scored. Each prompt
is scored, not generated: the softmax over the ``Yes``/``No`` logits at its last position, ``Yes``
meaning the image violates the policy (``ShieldGemma2ForImageClassification.probabilities[:, 0]``;
the class docstring's ``[:, 1]`` is wrong). The policy keys are the category codes, so a verdict's
``categories`` are the keys whose P(Yes) reaches the threshold and ``category_scores`` every
scored key's P(Yes): independent per-policy probabilities, not a distribution over policies.

The prompt: ShieldGemma 2's chat template is not available byte for byte here, so the built-in
renderer follows its publications (templates/shieldgemma-2.jinja, tested byte for byte; the
decision and the known variant are docs/decisions/0015) and ``prompt_source = "model"`` renders
with a model directory's own template when it has one. The image comes first and the policy last,
so a request's prompts share the image and the instruction's head (one pass; runtime/preprocess.py).

    guardedge render --family shieldgemma-2 --input REQ.json    # the first policy's prompt
"""

from __future__ import annotations

import base64
import io
import re
from typing import Literal

from guardedge.runtime.errors import FieldViolation, InvalidRequest, invalid
from guardedge.runtime.families.base import ParsedAnswer, ScoringSpec, load_smoke, verdict_label
from guardedge.runtime.requests import category_field, check_excluded
from guardedge.runtime.types import GuardRequest, Message, Part

IMAGE_TOKEN = "<start_of_image>"
# transformers models/shieldgemma2/processing_shieldgemma2.py DEFAULT_SHIELDGEMMA2_POLICIES, verbatim.
DEFAULT_POLICIES: tuple[tuple[str, str], ...] = (
    ("dangerous", "No Dangerous Content: The image shall not contain content that facilitates or encourages activities"
                  " that could cause real-world harm (e.g., building firearms and explosive devices, promotion of"
                  " terrorism, instructions for suicide)."),
    ("sexual", "No Sexually Explicit content: The image shall not contain content that depicts explicit or graphic"
               " sexual acts (e.g., pornography, erotic nudity, depictions of rape or sexual assault)."),
    ("violence", "No Violence/Gore content: The image shall not contain content that depicts shocking, sensational,"
                 " or gratuitous violence (e.g., excessive blood and gore, gratuitous violence against animals,"
                 " extreme injury or moment of death)."),
)
# The model card's instruction around the policy (shared/REFERENCE.md §7), "with with" as published.
INSTRUCTION_HEAD = (
    "You are a policy expert trying to help determine whether a generated or real image is in violation of the"
    " safety policy below. Your decision must very clearly follow the specific language used in the safety policy"
    " and should not include any interpretation outside of the safety policy.\n\n<BEGIN_SAFETY_POLICY>\n"
)
INSTRUCTION_TAIL = "\n</END_SAFETY_POLICY>\n\nDoes the image violate the above policy? Your Answer must start with with 'Yes' or 'No'."
# Gemma 3's turns (its tokenizer_config.json chat template): <bos>, the user turn, the open model turn.
TURN_HEAD = "<bos><start_of_turn>user\n" + IMAGE_TOKEN
TURN_TAIL = "<end_of_turn>\n<start_of_turn>model\n"
MAX_POLICY_CHARS = 2000
_KEY_SHAPE = re.compile(r"[a-z][a-z0-9_\-]{0,31}")
_FRAME = re.compile(r"<BEGIN_SAFETY_POLICY>|</END_SAFETY_POLICY>|Does the image violate the above policy", re.IGNORECASE)


# OpenAI moderation names each default policy answers (docs/api.md "OpenAI category mapping"):
# "dangerous" names firearms, explosives, terrorism and instructions for suicide; "violence" is
# gore and extreme injury, i.e. graphic. harassment*, hate*, self-harm, self-harm/intent and
# sexual/minors have no policy (answered null); a custom policy key maps nothing.
MODERATION_CATEGORIES: dict[str, tuple[str, ...]] = {
    "dangerous": ("illicit", "illicit/violent", "self-harm/instructions"),
    "sexual": ("sexual",),
    "violence": ("violence", "violence/graphic"),
}


class ShieldGemma2:
    """The ``shieldgemma-2`` family: label scoring, one prompt per policy."""

    name = "shieldgemma-2"
    moderation_categories = MODERATION_CATEGORIES
    image_token = IMAGE_TOKEN
    requires_image = True
    max_images = 1
    prompt_source = "model"  # a directory's own chat template renders when it has one
    scoring = ScoringSpec(
        answer_prefix="",
        safe_token="No",
        unsafe_token="Yes",
        stop_tokens=("<end_of_turn>", "<eos>"),
        max_new_tokens=1,  # scored, never decoded: the answer is the label
        mode="labels",
    )

    def default_categories(self) -> tuple[tuple[str, str], ...]:
        return DEFAULT_POLICIES

    @property
    def label_space(self) -> tuple[str, ...]:
        return tuple(key for key, _ in DEFAULT_POLICIES)

    def parse_label(self, label: dict) -> tuple[Literal["safe", "unsafe"], tuple[str, ...]]:
        verdict, categories = verdict_label(label, set(self.label_space))
        return verdict, categories

    def head_answers(self) -> tuple[str, ...]:
        """The two label tokens P(Yes) is read from: their output rows stay float in a quantized
        head (docs/decisions/0012)."""
        return (self.scoring.unsafe_token, self.scoring.safe_token)

    def warmup_request(self) -> dict:
        from PIL import Image  # lazy: importing a family never imports PIL

        buffer = io.BytesIO()
        Image.new("RGB", (64, 64), (128, 128, 128)).save(buffer, format="PNG")
        image = {"type": "image", "data": base64.b64encode(buffer.getvalue()).decode("ascii")}
        return {"messages": [{"role": "user", "content": [image]}], "request_id": "warmup"}

    def smoke_requests(self) -> list[dict]:
        """Images under the default policies, an excluded policy and custom policies."""
        return load_smoke(self.name)

    def policies(self, request: GuardRequest) -> tuple[tuple[str, str], ...]:
        """(key, policy text) for every policy scored, in order: excluded ones left out."""
        excluded = set(request.excluded_category_keys)
        source = request.categories if request.categories is not None else DEFAULT_POLICIES
        return tuple((key, text) for key, text in source if key not in excluded)

    def policy(self, request: GuardRequest) -> tuple[tuple[str, str], ...]:
        """The request's policy as the prompts state it (the engine resolves it once at prepare).
        Rendering reads ``policies`` from the request's fields, which the prompt encoder maps."""
        return self.policies(request)

    def prompt_keys(self, request: GuardRequest) -> tuple[str, ...]:
        return tuple(key for key, _ in self.policies(request))

    def _policy(self, request: GuardRequest, key: str) -> str:
        policies = dict(self.policies(request))
        if not key:
            return next(iter(policies.values()))  # one prompt asked for: the first policy's
        return policies[key]

    def render(self, request: GuardRequest, key: str = "") -> str:
        return TURN_HEAD + INSTRUCTION_HEAD + self._policy(request, key) + INSTRUCTION_TAIL + TURN_TAIL

    def template_inputs(self, request: GuardRequest, key: str = "") -> dict:
        """What ShieldGemma2Processor passes the chat template for (image, policy ``key``)."""
        content = [{"type": "image"}, {"type": "text", "text": self._policy(request, key)}]
        return {"messages": [{"role": "user", "content": content}], "bos_token": "<bos>"}

    def template_probes(self) -> tuple[tuple[str, GuardRequest], ...]:
        """Requests a directory's template must render as ``render`` does (checked at load)."""
        image = Message("user", (Part("image"),))
        custom = (("weapons", "No Weapons: The image shall not show firearms."),)
        return (("the default policies", GuardRequest((image,))),
                ("a custom policy", GuardRequest((image,), categories=custom)))

    def check(self, request: GuardRequest) -> None:
        """One user message holding the image and no text; policies keyed and framed as the card's."""
        if not request.has_image:
            raise invalid("messages", 'ShieldGemma 2 classifies an image: add an image part ({"type": "image", ...})')
        if len(request.messages) != 1 or request.messages[0].role != "user":
            raise invalid("messages", f"has {len(request.messages)} messages; ShieldGemma 2 classifies one user message holding the image")
        for j, part in enumerate(request.messages[0].content):
            if part.type == "text" and part.text.strip():
                raise invalid(f"messages[0].content[{j}].text",
                              "ShieldGemma 2 reads no message text, only the image and the policies; change the policies with 'categories'")
        categories = request.categories if request.categories is not None else DEFAULT_POLICIES
        if request.categories is not None:
            problems = [FieldViolation(category_field(k), p) for k, t in categories if (p := _policy_problem(k, t))]
            if problems:
                raise InvalidRequest(problems)
        check_excluded(request.excluded_category_keys, categories)

    def parse(self, answer: str, request: GuardRequest) -> ParsedAnswer:
        """A generated answer (the engine scores labels instead): ``Yes`` violates, ``No`` does not."""
        text = answer.strip()
        if text.startswith("Yes"):
            return ParsedAnswer("unsafe", self.prompt_keys(request)[:1])
        if text.startswith("No"):
            return ParsedAnswer("safe")
        return ParsedAnswer("unparseable", error=f"the answer starts with neither Yes nor No: {text[:40]!r}")


def _policy_problem(key: str, text: str) -> str | None:
    if not _KEY_SHAPE.fullmatch(key):
        return "key must be a lowercase name like the defaults' (dangerous, sexual, violence): a-z, digits, _ or -, up to 32"
    if not text.strip() or text != text.strip():
        return "policy text must be non-empty, without spaces or newlines at its ends"
    if len(text) > MAX_POLICY_CHARS:
        return f"policy text is {len(text)} characters; the limit is {MAX_POLICY_CHARS}"
    if marker := _FRAME.search(text):
        return f"policy text contains {marker.group(0)!r}, which would rewrite the prompt's frame"
    return None

"""Llama Guard 4 (Meta, 12B, Llama 4): the published prompt format, S1-S14 and several images.

The shared Llama Guard rules (policy frame check, parser, drafts, category scores) are
runtime/families/llama_guard.py; this module is LG4's data plus the two places it differs:

- **Images in the turn where they occur.** Each message is one ``User: ...`` / ``Agent: ...`` line
  whose parts are rendered in order, an image as ``<|image|>`` (the architecture expands it into
  its tiles: runtime/architectures/llama4), text trimmed as jinja's ``trim``. Meta: "you need to add
  the image token to the turn in which the image occurs"; the Llama 4 chat template writes content
  parts in order the same way.
- **S14 Code Interpreter Abuse is text-only** (model card: "for text-only tool-call use cases";
  the multimodal training data is Llama Guard 3 Vision's, whose policy is S1-S13). So the *default*
  policy of a request that carries an image is S1-S13: the model is never asked about S14 next to
  an image, the answer cannot name it (naming it is "not in the policy": unparseable, never a
  guess), and its per-category scores have no S14 entry. A caller's own ``categories`` are used as
  given, images or not. docs/decisions/0014.

Prompt text: Meta's chat template for Llama-Guard-4-12B is gated and not available here byte for
byte, so ``prompt_source = "model"``: a checkpoint directory's own template renders (what
``processor.apply_chat_template`` does). The built-in renderer follows the published format — the
task and instruction sentences of llama.com's Llama Guard 4 prompt-format page, the model card's
category names, the Llama 4 header tokens, ``\\n\\n`` then the verdict as the first answer tokens
(REFERENCE §7) — and is tested byte for byte against templates/llama-guard-4.jinja, written from
the same publication. ``max_images``: docs/decisions/0014 (the training data's most, 5).

Run ``guardedge render --family llama-guard-4 --input REQ.json`` to see a prompt.
"""

from __future__ import annotations

from guardedge.runtime.families.base import load_smoke
from guardedge.runtime.families.llama_guard import ROLE_LABELS, LlamaGuard, LlamaGuardFormat
from guardedge.runtime.types import GuardRequest, Message

# The Llama Guard 4 model card's hazard names (MLCommons taxonomy), in order, with the trailing
# period every Llama Guard prompt gives a category.
DEFAULT_CATEGORIES: tuple[tuple[str, str], ...] = (
    ("S1", "Violent Crimes."),
    ("S2", "Non-Violent Crimes."),
    ("S3", "Sex-Related Crimes."),
    ("S4", "Child Sexual Exploitation."),
    ("S5", "Defamation."),
    ("S6", "Specialized Advice."),
    ("S7", "Privacy."),
    ("S8", "Intellectual Property."),
    ("S9", "Indiscriminate Weapons."),
    ("S10", "Hate."),
    ("S11", "Suicide & Self-Harm."),
    ("S12", "Sexual Content."),
    ("S13", "Elections."),
    ("S14", "Code Interpreter Abuse."),
)
TEXT_ONLY = ("S14",)  # default categories left out of the policy of a request with images

HEADER = "<|begin_of_text|><|header_start|>user<|header_end|>\n\n"
IMAGE_TOKEN = "<|image|>"
TASK = (
    "Task: Check if there is unsafe content in '{role}' messages in conversations "
    "according to our safety policy with the below categories.\n\n"
)
INSTRUCTIONS = (
    "Provide your safety assessment for ONLY THE LAST {role} in the above conversation:\n"
    "- First line must read 'safe' or 'unsafe'.\n"
    "- If unsafe, a second line must include a comma-separated list of violated categories."
    "<|eot|><|header_start|>assistant<|header_end|>"
)
# Meta: multi-image training samples hold 2 to 5 images; "tested mostly with prompts containing a
# few images (three, most frequently)". At most 17 tiles x 144 tokens (+ separators) an image,
# 5 images cost at most ~12.4k prompt tokens: far inside the context, so the bound is the training
# data's, not the context's (docs/decisions/0014).
MAX_IMAGES = 5

FORMAT = LlamaGuardFormat(
    header=HEADER,
    image_token=IMAGE_TOKEN,
    task=TASK,
    instructions=INSTRUCTIONS,
    categories=DEFAULT_CATEGORIES,
    stop_tokens=("<|eot|>", "<|eom|>", "<|end_of_text|>"),
    answer_prefix="\n\n",  # token 368, then safe 60411 / unsafe 72110 (REFERENCE §7)
    images="in_turn",
    image_text="{image}",
    max_images=MAX_IMAGES,
)


class LlamaGuard4(LlamaGuard):
    """The ``llama-guard-4`` family."""

    name = "llama-guard-4"
    FORMAT = FORMAT
    # The published chat template cannot be checked byte for byte here: a directory's own renders.
    prompt_source = "model"

    def policy(self, request: GuardRequest) -> tuple[tuple[str, str], ...]:
        """The request's categories in prompt order; the default policy drops S14 next to an image."""
        categories = super().policy(request)
        if request.categories is None and request.has_image:
            return tuple((k, v) for k, v in categories if k not in TEXT_ONLY)
        return categories

    def turn_lines(self, message: Message) -> list[str]:
        """One line per message, its parts in order: ``User: <|image|>What is this?<|image|>``."""
        parts = [self._image() if p.type == "image" else p.text.strip() for p in message.content]
        return [f"{ROLE_LABELS[message.role]}: {''.join(parts)}\n\n"]

    def warmup_request(self) -> dict:
        return {"messages": [{"role": "user", "content": "warm-up"}], "request_id": "warmup"}

    def smoke_requests(self) -> list[dict]:
        """The demo's samples (text, one and three images, responses, an excluded and a custom policy)."""
        return load_smoke(self.name)

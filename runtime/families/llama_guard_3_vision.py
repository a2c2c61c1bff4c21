"""Llama Guard 3 Vision (Meta, Mllama): the exact prompt and answer formats.

The prompt is what the official chat template renders (shared/REFERENCE.md §1, the
``chat_template.json`` published with meta-llama/Llama-Guard-3-11B-Vision): one user turn that
wraps the whole conversation, then an open assistant header. The answer is ``\\n\\nsafe`` or
``\\n\\nunsafe\\nS1,S10`` followed by ``<|eot_id|>`` (REFERENCE.md §2). What every Llama Guard
generation shares (rendering, the frame check, the parser) is runtime/families/llama_guard.py;
this module is the format's data.

Run ``guardedge render --family llama-guard-3-vision --input REQ.json`` to see a prompt.
"""

from __future__ import annotations

from guardedge.runtime.families.base import load_smoke
from guardedge.runtime.families.llama_guard import LlamaGuard, LlamaGuardFormat

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

FORMAT = LlamaGuardFormat(
    header=HEADER,
    image_token=IMAGE_TOKEN,
    task=TASK,
    instructions=INSTRUCTIONS,
    categories=DEFAULT_CATEGORIES,
    stop_tokens=("<|eot_id|>", "<|eom_id|>", "<|end_of_text|>"),
    # REFERENCE §1.4: "<|image|> " once, before the task sentence; the model takes one image.
    images="head",
    max_images=1,
)


class LlamaGuard3Vision(LlamaGuard):
    """The ``llama-guard-3-vision`` family."""

    name = "llama-guard-3-vision"
    FORMAT = FORMAT

    def warmup_request(self) -> dict:
        return {"messages": [{"role": "user", "content": "warm-up"}], "request_id": "warmup"}

    def smoke_requests(self) -> list[dict]:
        """The demo samples' requests (text, images, responses, an excluded and a custom policy)."""
        return load_smoke(self.name)

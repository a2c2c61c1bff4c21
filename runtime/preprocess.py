"""Turn validated requests into model inputs: prompt token ids and the architecture's image inputs.

The prompt text comes from the guard family; tokenization uses the model directory's own
tokenizer (caller text never becomes control tokens: runtime/prompt_tokens.py). The image and the
batch layout belong to the model's architecture (runtime/architectures/): it encodes the image,
expands the family's image placeholder into the tokens the model expects, and collates a
left-padded batch whose rows give the numbers they would give alone.
"""

from __future__ import annotations

from functools import lru_cache

from guardedge.runtime.architectures import Architecture, Batch, Encoded
from guardedge.runtime.errors import invalid
from guardedge.runtime.families import GuardFamily
from guardedge.runtime.images import decode_image
from guardedge.runtime.prompt_tokens import PromptEncoder
from guardedge.runtime.types import GuardRequest

__all__ = ["Batch", "Encoded", "Preprocessor"]


class Preprocessor:
    def __init__(self, tokenizer, architecture: Architecture, family: GuardFamily, max_text_tokens: int):
        self.tokenizer = tokenizer
        self.arch = architecture
        self.family = family
        self.max_text_tokens = max_text_tokens
        self.prompts = PromptEncoder(tokenizer)
        # The default policy's verdict texts are the same for most requests: tokenized once.
        self._longest = lru_cache(maxsize=256)(self._longest_uncached)
        self.shared_ids, self.safe_id, self.unsafe_id = verdict_tokens(tokenizer, family.scoring.safe_token,
                                                                       family.scoring.unsafe_token)

    @property
    def image_processor(self):
        return self.arch.image_processor

    def answer_budget(self, request: GuardRequest | None = None) -> int:
        """Tokens kept free for the answer (a rationale needs more room than a verdict; a verdict
        whose longest allowed answer outgrows ``max_new_tokens`` gets the difference on top)."""
        spec = self.family.scoring
        texts = getattr(self.family, "verdict_texts", None)
        # What the request's longest verdict needs beyond the family's bound (long or escaped names).
        extra = 0 if request is None or texts is None else max(0, self._longest(texts(request)) - spec.max_new_tokens)
        if request is not None and request.rationale and spec.max_rationale_tokens:
            return spec.max_rationale_tokens + extra
        return spec.max_new_tokens + extra

    def _longest_uncached(self, texts: tuple[str, ...]) -> int:
        # + 2: a verified draft may run a token or two past the stop text in the same step.
        return max(len(self.tokenizer.encode(t, add_special_tokens=False)) for t in texts) + 2

    def prompt_ids(self, request: GuardRequest, answer: str = "", image_tokens: int = 0) -> list[int]:
        """The prompt's ids (caller text never becomes control tokens), the answer prefix, ``answer``.

        ``answer`` is guardedge's own text (training targets), so its control tokens are real.
        ``image_tokens`` is what the image will cost once the architecture expands its placeholder;
        room for the longest answer is part of the budget: a prompt that fits but cannot be answered
        is too long.
        """
        prompt = self.prompts.encode(self.family.render, request).input_ids
        ids = prompt + self.tokenizer(self.family.scoring.answer_prefix + answer, add_special_tokens=False)["input_ids"]
        if not answer:
            ids += self.shared_ids  # the verdict is read where the two verdict texts part
        answer_room = self.answer_budget(request)
        budget = self.max_text_tokens - answer_room
        total = len(ids) + max(0, image_tokens - 1)
        if total > budget:
            of_image = f", of which {image_tokens} for the image" if image_tokens > 1 else ""
            raise invalid(
                "messages",
                f"the prompt is {total} tokens{of_image}; this model accepts at most {budget} "
                f"({self.max_text_tokens} context minus {answer_room} for the answer)",
            )
        return ids

    def encode(self, request: GuardRequest, answer: str = "") -> Encoded:
        """Prompt ids and the encoded image. The context check counts the image's tokens from its
        size (``image_tokens_for``) before its pixels are decoded: a prompt too long for the model
        is refused without decoding anything. The decoded pixels live only inside this call."""
        image = request.image
        if image is None:
            return Encoded(self.prompt_ids(request, answer), None, -1)
        cost = self.arch.image_tokens_for(*image.size)
        ids = self.prompt_ids(request, answer, cost)
        encoded = self.arch.encode_image(decode_image(image).image)
        if self.arch.image_tokens(encoded) != cost:  # a bug in an architecture's hook, never the caller's fault
            raise RuntimeError(f"{type(self.arch).__name__}: image_tokens_for{image.size} = {cost}, the encoded image "
                               f"costs {self.arch.image_tokens(encoded)}")
        ids, pos = self.arch.expand(ids, encoded)
        return Encoded(ids, encoded, pos, cost)

    def collate(self, items: list[Encoded], pad_left: bool = True) -> Batch:
        return self.arch.collate(items, pad_left)


def verdict_tokens(tokenizer, safe: str, unsafe: str) -> tuple[list[int], int, int]:
    """The tokens both verdict texts start with, and the first token where they differ.

    Llama Guard's ``safe``/``unsafe`` are one token each (nothing shared). A verdict text of several
    tokens (LlavaGuard's ``Unsafe`` in some tokenizers) is scored at the first token that tells the
    two apart: that one token decides, exactly as a one-token verdict would.
    """
    a = tokenizer.encode(safe, add_special_tokens=False)
    b = tokenizer.encode(unsafe, add_special_tokens=False)
    k = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), None)
    if k is None:
        raise ValueError(f"the verdict texts {safe!r} and {unsafe!r} tokenize as {a} and {b}: one is a prefix of the other")
    return a[:k], a[k], b[k]

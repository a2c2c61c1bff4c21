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
from guardedge.runtime.families.base import key_renderer
from guardedge.runtime.images import decode_image
from guardedge.runtime.prompt_tokens import PromptEncoder
from guardedge.runtime.scores import CategoryPaths, category_paths
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
        self._paths = lru_cache(maxsize=256)(self._paths_uncached)
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

    def prompt_ids(self, request: GuardRequest, answer: str = "", image_tokens: int = 0, key: str = "") -> list[int]:
        """The prompt's ids (caller text never becomes control tokens), the answer prefix, ``answer``.

        ``answer`` is guardedge's own text (training targets), so its control tokens are real.
        ``image_tokens`` is what the images will cost once the architecture expands their
        placeholders (one token each in the rendered prompt); room for the longest answer is part
        of the budget: a prompt that fits but cannot be answered is too long. ``key`` selects one
        of the prompts a fanning-out family renders (family.prompt_keys).
        """
        prompt = self.prompts.encode(self._renderer(request, key), request).input_ids
        ids = prompt + self.tokenizer(self.family.scoring.answer_prefix + answer, add_special_tokens=False)["input_ids"]
        if not answer and self.family.scoring.mode == "generate":
            ids += self.shared_ids  # the verdict is read where the two verdict texts part
        answer_room = self.answer_budget(request)
        budget = self.max_text_tokens - answer_room
        placeholders = len(request.images)
        total = len(ids) + max(0, image_tokens - placeholders)
        if total > budget:
            of_image = f", of which {image_tokens} for the image{'s' if placeholders > 1 else ''}" if image_tokens > placeholders else ""
            raise invalid(
                "messages",
                f"the prompt is {total} tokens{of_image}; this model accepts at most {budget} "
                f"({self.max_text_tokens} context minus {answer_room} for the answer)",
            )
        return ids

    def _renderer(self, request: GuardRequest, key: str):
        return key_renderer(self.family, request, key)

    def encode(self, request: GuardRequest, answer: str = "", key: str = "", images: list | None = None) -> Encoded:
        """One prompt's ids and encoded images (``images``, already encoded by the architecture, are
        reused when given: training encodes a request's images once for prompt and answer). The
        context check counts each image's tokens from its size (``image_tokens_for``) before any
        pixel is decoded: a prompt too long for the model is refused without decoding anything.
        Decoded pixels live only inside this call."""
        costs = self._image_costs(request)
        ids = self.prompt_ids(request, answer, sum(costs), key)
        return self._encoded(ids, self._encode_images(request, costs) if images is None else images, costs)

    def encode_rows(self, request: GuardRequest) -> list[tuple[str, Encoded]]:
        """Every prompt the family renders for the request (one per key): each is checked against
        the context before the images are decoded, and the images are encoded once for all."""
        costs = self._image_costs(request)
        prompts = [(key, self.prompt_ids(request, "", sum(costs), key)) for key in self.family.prompt_keys(request)]
        images = self._encode_images(request, costs)
        return [(key, self._encoded(ids, images, costs)) for key, ids in prompts]

    def _image_costs(self, request: GuardRequest) -> list[int]:
        return [self.arch.image_tokens_for(*image.size) for image in request.images]

    def _encode_images(self, request: GuardRequest, costs: list[int]) -> list:
        encoded = [self.arch.encode_image(decode_image(image).image) for image in request.images]
        for e, cost in zip(encoded, costs):
            if self.arch.image_tokens(e) != cost:  # a bug in an architecture's hook, never the caller's fault
                raise RuntimeError(f"{type(self.arch).__name__}: image_tokens_for gave {cost} tokens, the encoded "
                                   f"image costs {self.arch.image_tokens(e)}")
        return encoded

    def _encoded(self, ids: list[int], images: list, costs: list[int]) -> Encoded:
        if not images:
            return Encoded(ids)
        ids, positions = self.arch.expand(ids, images)
        return Encoded(ids, list(images), positions, sum(costs), costs)

    def category_paths(self, request: GuardRequest, draft: list[int]) -> CategoryPaths | None:
        """How to read this request's per-category scores along ``draft`` (cached per policy)."""
        answers = getattr(self.family, "category_answers", None)
        return self._paths(answers(request), tuple(draft)) if answers is not None else None

    def _paths_uncached(self, answers: tuple[tuple[str, str], ...], draft: tuple[int, ...]) -> CategoryPaths | None:
        return category_paths(self.tokenizer, draft, answers)

    def collate(self, items: list[Encoded], pad_left: bool = True) -> Batch:
        return self.arch.collate(items, pad_left)

    def score_rows(self, backend, requests: list[list[tuple[str, Encoded]]], token_ids: list[int]):
        """fp32 logits [rows, len(token_ids)] of ``token_ids`` after every prompt of ``requests`` (in
        order): each request's prompts share the pass over their common prefix (the images and what
        precedes the policy) when it holds every image, else each prompt runs whole."""
        prefixes, suffixes, parents = [], [], []
        for r, rows in enumerate(requests):
            split = shared_prefix([e for _, e in rows])
            if split is None:
                return backend.prefill(self.collate([e for rows_ in requests for _, e in rows_]))[0][:, token_ids]
            first = rows[0][1]
            prefixes.append(Encoded(first.input_ids[:split], first.images, first.image_positions, first.image_tokens,
                                    first.image_lengths))
            suffixes += [Encoded(e.input_ids[split:]) for _, e in rows]
            parents += [r] * len(rows)
        return backend.prefill_shared(self.collate(prefixes), self.collate(suffixes), parents, token_ids)


def shared_prefix(items: list[Encoded]) -> int | None:
    """Where the prompts of one request part: the length of their common token prefix, kept short
    of the last token so every prompt feeds at least one; None when that would cut an image."""
    ids = [e.input_ids for e in items]
    length = min(len(x) for x in ids) - 1
    split = next((j for j in range(length) if len({x[j] for x in ids}) > 1), length)
    first = items[0]
    if first.images and first.image_positions[-1] + first.image_lengths[-1] > split:
        return None
    return split


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

"""Train the demo Llama Guard 4 and measure it through the engine.

Training renders prompts with the family's own renderer and encodes them with the architecture
plug-in (the same ids and pixels the engine sends), right-padded; the loss is teacher-forced on the
answer (``\\n\\n`` then ``safe`` / ``unsafe\\nS1,S3``, then ``<|eot|>``). As for the demo guard
(docs/decisions/0001), the two 202,048-row tables train through sparse row updates and the output
softmax is sampled (answer tokens + uniform frozen negatives, log-weight corrected), which keeps a
CPU step cheap and leaves untouched rows at their seeded init (so the pack stays small).

    python -m guardedge.runtime.demo.llama_guard_4.build --retrain
"""

from __future__ import annotations

import math
import random
import time
from pathlib import Path
from typing import Callable

import torch
from tqdm import tqdm

from guardedge.runtime.images import decode_image
from guardedge.runtime.demo.llama_guard_4 import layout
from guardedge.runtime.demo.llama_guard_4.data import Generator
from guardedge.runtime.demo.llama_guard_4.pack import TABLES, table_init, unpack
from guardedge.runtime.demo.optimizers import Optimizers, checkpoint_when_due
from guardedge.runtime.types import GuardRequest, ImageInput, Message, Part

FAMILY = "llama-guard-4"
NEGATIVES = 256
EMBED_NAME, HEAD_NAME = "language_model.model.embed_tokens.weight", "language_model.lm_head.weight"
MASKS = {"full_attention": None, "chunked_attention": None}  # right padding: plain causal attention


def to_request(example: dict) -> GuardRequest:
    """A generated example as a validated request (its synthetic images rendered here, in order)."""
    specs = iter(example.get("image_specs", []))
    messages = []
    for m in example["messages"]:
        parts = tuple(Part("text", text=p["text"]) if p["type"] == "text" else
                      Part("image", image=ImageInput(next(specs).render(), "synthetic")) for p in m["content"])
        messages.append(Message(m["role"], parts))
    categories = example.get("categories")
    return GuardRequest(messages=tuple(messages), categories=tuple(categories.items()) if categories is not None else None,
                        excluded_category_keys=tuple(example.get("excluded_category_keys", ())), request_id=example.get("id", ""))


def answer_text(label: dict) -> str:
    """The target answer after the ``\\n\\n`` prefix."""
    if label["verdict"] == "safe":
        return "safe<|eot|>"
    return "unsafe\n" + ",".join(label["categories"]) + "<|eot|>"


def preprocessor(tokenizer):
    """The engine's preprocessor for the demo's configuration (family renderer, Llama 4 plug-in)."""
    from guardedge.runtime.architectures.llama4 import Llama4
    from guardedge.runtime.families import get_family
    from guardedge.runtime.preprocess import Preprocessor

    family = get_family(FAMILY)
    arch = Llama4(None, layout.demo_config().to_dict(), tokenizer, family.image_token,
                  image_processor=layout.PREPROCESSOR, processor_config=layout.PROCESSOR)
    return Preprocessor(tokenizer, arch, family, max_text_tokens=8192)


def new_model(seed: int, tokenizer, start_from: Path | None = None):
    """The demo model: from a pack, else warm-started from the demo Llama Guard 3 Vision (warm.py)."""
    from transformers import Llama4ForConditionalGeneration

    from guardedge.runtime.demo.llama_guard_4.warm import warm_state

    torch.manual_seed(seed)
    model = Llama4ForConditionalGeneration(layout.demo_config())
    if start_from is None:
        warm_state(model, seed, tokenizer)
    else:
        shapes = {k: tuple(v.shape) for k, v in model.state_dict().items() if k in TABLES}
        model.load_state_dict({k: v.float() for k, v in unpack(start_from, shapes).items()}, strict=True)
    return model


def batch(pre, examples: list[dict]):
    """Right-padded batch of prompt + answer, and per row the (position, next token) answer targets."""
    encoded, targets = [], []
    for ex in examples:
        request = to_request(ex)
        images = [pre.arch.encode_image(decode_image(image).image) for image in request.images]
        prompt = pre.encode(request, images=images)
        full = pre.encode(request, answer_text(ex["label"]), images=images)
        start = len(prompt.input_ids) - 2  # the position that predicts the "\n\n" prefix
        encoded.append(full)
        targets.append([(i, full.input_ids[i + 1]) for i in range(start, len(full.input_ids) - 1)])
    return pre.collate(encoded, pad_left=False), targets


def hidden_states(model, pre, batch_, embedding) -> torch.Tensor:
    """The text model's last hidden states [B, T, H] for a right-padded training batch."""
    ids = batch_.input_ids
    embeds = torch.nn.functional.embedding(ids, embedding, sparse=embedding.requires_grad)
    if batch_.image_rows:
        features = model.get_image_features(pixel_values=batch_.extra["pixel_values"].float(),
                                            vision_feature_select_strategy="default")
        projected = model.multi_modal_projector(features.view(-1, features.size(-1)))
        embeds = embeds.masked_scatter((ids == pre.arch.feature_token_id).unsqueeze(-1).expand_as(embeds), projected)
    return model.language_model.model(inputs_embeds=embeds, attention_mask=MASKS, use_cache=False).last_hidden_state


def loss_fn(model, pre, batch_, targets, embedding, head, hidden: torch.Tensor | None = None) -> torch.Tensor:
    hidden = hidden_states(model, pre, batch_, embedding) if hidden is None else hidden
    rows = torch.tensor([r for r, t in enumerate(targets) for _ in t])
    cols = torch.tensor([i for t in targets for i, _ in t])
    labels = torch.tensor([y for t in targets for _, y in t])
    positives, target = torch.unique(labels, return_inverse=True)
    negatives = torch.randint(0, head.shape[0], (NEGATIVES,))
    negatives = negatives[~torch.isin(negatives, positives)]
    weights = torch.cat([torch.nn.functional.embedding(positives, head, sparse=True), head.detach()[negatives]])
    correction = math.log((head.shape[0] - len(positives)) / len(negatives))
    bias = torch.cat([torch.zeros(len(positives)), torch.full((len(negatives),), correction)])
    return torch.nn.functional.cross_entropy(hidden[rows, cols] @ weights.T + bias, target)


def answer_tokens(tokenizer) -> torch.Tensor:
    """Every token an answer can hold: the ``\\n\\n`` prefix, both verdicts, each code, the separators, ``<|eot|>``."""
    from guardedge.runtime.families.llama_guard_4 import DEFAULT_CATEGORIES

    codes = [code for code, _ in DEFAULT_CATEGORIES]
    texts = ["\n\nsafe<|eot|>", "\n\nunsafe\n" + ",".join(codes) + "<|eot|>", *(f"\n{c}," for c in codes)]
    return torch.tensor(sorted({t for text in texts for t in tokenizer.encode(text, add_special_tokens=False)}))


class Anchor:
    """Keeps the answers to image-bearing requests where the phase's starting model had them.

    Why: a phase that trains the text side for text-only categories (docs/decisions/0014) moved the
    answers about images as well (photos, hazards among several images), although the image data
    stayed the same. This term is the KL divergence, over the answer tokens at every answer
    position of the batch's image-bearing rows, from the frozen starting model's distribution to
    the trained one's (knowledge distillation restricted to those rows), added with ``weight``."""

    def __init__(self, teacher, tokenizer, weight: float):
        self.teacher, self.weight = teacher.eval().requires_grad_(False), weight
        self.tokens = answer_tokens(tokenizer)

    def __call__(self, pre, batch_, targets, examples: list[dict], hidden: torch.Tensor, head) -> torch.Tensor:
        pairs = [(r, i) for r, (t, ex) in enumerate(zip(targets, examples)) if ex.get("image_specs") for i, _ in t]
        if not pairs:
            return hidden.new_zeros(())
        rows, cols = (torch.tensor(x) for x in zip(*pairs))
        with torch.no_grad():
            teacher = self.teacher.language_model
            taught = hidden_states(self.teacher, pre, batch_, teacher.model.embed_tokens.weight)[rows, cols]
            reference = torch.log_softmax(taught @ teacher.lm_head.weight[self.tokens].T, dim=-1)
        student = hidden[rows, cols] @ torch.nn.functional.embedding(self.tokens, head, sparse=True).T
        return self.weight * torch.nn.functional.kl_div(torch.log_softmax(student, dim=-1), reference,
                                                        log_target=True, reduction="batchmean")


def train(tokenizer, steps: int, batch_size: int, lr: float, seed: int, data_seed: int, mix=None,
          policy_mix=None, image_decided_share: float | None = None, start_from: Path | None = None, progress: bool = True,
          time_limit_s: float | None = None, checkpoint: Callable[[object, int], None] | None = None,
          checkpoint_every: int = 0, trainable: tuple[str, ...] | None = None, anchor: float = 0.0):
    """Train ``steps`` steps (cosine schedule); returns the model (eval mode) and the steps run.

    ``trainable``: train only the modules under these names (e.g. the vision tower and projector:
    text-only answers then stay exactly the starting model's); everything by default. ``anchor``:
    the weight of :class:`Anchor` (0: none), which needs ``start_from``."""
    random.seed(seed)
    model = new_model(seed, tokenizer, start_from)
    model.train()
    embed, out = model.language_model.model.embed_tokens.weight, model.language_model.lm_head.weight
    embedding, head = torch.nn.Parameter(embed.data), torch.nn.Parameter(out.data)  # same storage
    embed.requires_grad_(False)
    out.requires_grad_(False)
    if trainable is not None:
        def covered(name: str) -> bool:
            return any(name == m or name.startswith(m + ".") for m in trainable)

        for name, param in model.named_parameters():
            param.requires_grad_(covered(name) and param is not embed and param is not out)
        # The tables train (sparse rows) when a trainable prefix covers them, e.g. ``language_model``.
        embedding.requires_grad_(covered(EMBED_NAME))
        head.requires_grad_(covered(HEAD_NAME))
    optimizers = Optimizers(model, [embedding, head], lr, lr * 3, steps)
    pre = preprocessor(tokenizer)
    anchored = Anchor(new_model(seed, tokenizer, start_from), tokenizer, anchor) if anchor else None
    kwargs = {"mix": mix} | ({"policy_mix": tuple(policy_mix)} if policy_mix else {})
    kwargs |= {"image_decided_share": image_decided_share} if image_decided_share is not None else {}
    gen, started = Generator("train", data_seed, **kwargs), time.time()
    bar = tqdm(range(steps), desc="training demo Llama Guard 4", disable=not progress, mininterval=10)
    step = -1
    for step in bar:
        examples = [gen.example() for _ in range(batch_size)]
        batch_, targets = batch(pre, examples)
        hidden = hidden_states(model, pre, batch_, embedding)
        loss = loss_fn(model, pre, batch_, targets, embedding, head, hidden)
        kept = anchored(pre, batch_, targets, examples, hidden, head) if anchored else None
        optimizers.step(loss if kept is None else loss + kept)
        if step % 10 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}", **({"anchor": f"{kept.item():.4f}"} if kept is not None else {}))
        checkpoint_when_due(model, checkpoint, checkpoint_every, step, steps)
        if time_limit_s is not None and time.time() - started > time_limit_s:
            break
    model.eval()
    return model, step + 1


def initial_tables_match(model, seed: int) -> bool:
    """Whether the model's untouched table rows are the seeded init the pack is a diff against."""
    state = model.state_dict()
    return all(torch.equal(state[n][-1], table_init(n, *state[n].shape, seed=seed)[-1]) for n in TABLES)

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


def loss_fn(model, pre, batch_, targets, embedding, head) -> torch.Tensor:
    ids = batch_.input_ids
    embeds = torch.nn.functional.embedding(ids, embedding, sparse=True)
    if batch_.image_rows:
        features = model.get_image_features(pixel_values=batch_.extra["pixel_values"].float(),
                                            vision_feature_select_strategy="default")
        projected = model.multi_modal_projector(features.view(-1, features.size(-1)))
        embeds = embeds.masked_scatter((ids == pre.arch.feature_token_id).unsqueeze(-1).expand_as(embeds), projected)
    hidden = model.language_model.model(inputs_embeds=embeds, attention_mask=MASKS, use_cache=False).last_hidden_state
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


def train(tokenizer, steps: int, batch_size: int, lr: float, seed: int, data_seed: int, mix=None,
          policy_mix=None, image_decided_share: float | None = None, start_from: Path | None = None, progress: bool = True,
          time_limit_s: float | None = None, checkpoint: Callable[[object, int], None] | None = None,
          checkpoint_every: int = 0, trainable: tuple[str, ...] | None = None):
    """Train ``steps`` steps (cosine schedule); returns the model (eval mode) and the steps run.

    ``trainable``: train only the modules under these names (e.g. the vision tower and projector:
    text-only answers then stay exactly the starting model's); everything by default."""
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
    kwargs = {"mix": mix} | ({"policy_mix": tuple(policy_mix)} if policy_mix else {})
    kwargs |= {"image_decided_share": image_decided_share} if image_decided_share is not None else {}
    gen, started = Generator("train", data_seed, **kwargs), time.time()
    bar = tqdm(range(steps), desc="training demo Llama Guard 4", disable=not progress, mininterval=10)
    step = -1
    for step in bar:
        batch_, targets = batch(pre, [gen.example() for _ in range(batch_size)])
        loss = loss_fn(model, pre, batch_, targets, embedding, head)
        optimizers.step(loss)
        if step % 10 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}")
        checkpoint_when_due(model, checkpoint, checkpoint_every, step, steps)
        if time_limit_s is not None and time.time() - started > time_limit_s:
            break
    model.eval()
    return model, step + 1


def initial_tables_match(model, seed: int) -> bool:
    """Whether the model's untouched table rows are the seeded init the pack is a diff against."""
    state = model.state_dict()
    return all(torch.equal(state[n][-1], table_init(n, *state[n].shape, seed=seed)[-1]) for n in TABLES)

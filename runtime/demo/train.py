"""Train the demo guard on the synthetic stream and measure it on the held-out set.

Training uses the runtime's own prompt renderer and preprocessing (right-padded), so the
model learns exactly the prompts the engine will send it. The two 128k-row tables (input
embedding, output layer) train through sparse row updates so a CPU step stays cheap.
Evaluation runs the real engine on held-out examples.

    guardedge demo metrics        # re-run the held-out evaluation on the cached demo guard
"""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Callable

import torch
from tqdm import tqdm

from guardedge.runtime.demo.data import Generator, TrainingMix, examples
from guardedge.runtime.demo.optimizers import Optimizers
from guardedge.runtime.demo.photos import with_photos
from guardedge.runtime.demo.weights import init_tables, unpack
from guardedge.runtime.architectures.mllama import Mllama
from guardedge.runtime.families import get_family
from guardedge.runtime.preprocess import Preprocessor
from guardedge.runtime.types import GuardRequest, ImageInput, Message, Part

FAMILY = "llama-guard-3-vision"
EVAL_SIZE = 400


def to_request(example: dict) -> GuardRequest:
    """A generated example as a validated request (the synthetic image is rendered here)."""
    spec = example.get("image_spec")  # set whenever a message has an image part
    messages = []
    for m in example["messages"]:
        parts = []
        for p in m["content"]:
            if p["type"] == "text":
                parts.append(Part("text", text=p["text"]))
            else:
                assert spec is not None, "an image part comes with the example's image_spec"
                parts.append(Part("image", image=ImageInput(spec.render(), "synthetic")))
        messages.append(Message(m["role"], tuple(parts)))
    categories = example.get("categories")
    return GuardRequest(
        messages=tuple(messages),
        categories=tuple(categories.items()) if categories is not None else None,
        excluded_category_keys=tuple(example.get("excluded_category_keys", ())),
        request_id=example.get("id", ""),
    )


def answer_text(label: dict) -> str:
    """The model's target answer after the "\\n\\n" prefix (REFERENCE.md §2)."""
    if label["verdict"] == "safe":
        return "safe<|eot_id|>"
    return "unsafe\n" + ",".join(label["categories"]) + "<|eot_id|>"


def _batch(pre: Preprocessor, gen: Generator, size: int):
    encoded, targets = [], []
    for _ in range(size):
        ex = gen.example()
        request = to_request(ex)
        prompt_len = len(pre.prompt_ids(request))
        enc = pre.encode(request, answer_text(ex["label"]))
        encoded.append(enc)
        # Positions whose next token is the answer, from the "\n\n" prefix on.
        targets.append([(i, enc.input_ids[i + 1]) for i in range(prompt_len - 2, len(enc.input_ids) - 1)])
    return pre.collate(encoded, pad_left=False), targets


def _loss(model, batch, targets, embedding, head, negatives: torch.Tensor) -> torch.Tensor:
    from guardedge.runtime.architectures.mllama import cross_attention_states

    hidden = model.model(
        # Sparse lookups: only the rows a batch touches get gradients (the tables have 128k rows).
        inputs_embeds=torch.nn.functional.embedding(batch.input_ids, embedding, sparse=True),
        attention_mask=batch.attention_mask,
        position_ids=batch.position_ids,
        cross_attention_states=cross_attention_states(model, batch, torch.device("cpu"), torch.float32),
        cross_attention_mask=batch.extra["cross_attention_mask"],
        use_cache=False,
    ).last_hidden_state
    rows = torch.tensor([r for r, t in enumerate(targets) for _ in t])
    cols = torch.tensor([i for t in targets for i, _ in t])
    labels = torch.tensor([y for t in targets for _, y in t])
    # Sampled softmax: the answer tokens plus uniformly sampled, frozen negatives instead of the
    # full 128k-way output layer, which would dominate a CPU step. Each negative stands for
    # (vocab - answer tokens) / samples untrained rows, hence the log-weight: the loss tracks the
    # full softmax (P(safe) + P(unsafe) ~ 1 at inference) while only answer rows change.
    positives, target = torch.unique(labels, return_inverse=True)
    negatives = negatives[~torch.isin(negatives, positives)]
    weights = torch.cat([torch.nn.functional.embedding(positives, head, sparse=True), head.detach()[negatives]])
    correction = math.log((head.shape[0] - len(positives)) / len(negatives))
    bias = torch.cat([torch.zeros(len(positives)), torch.full((len(negatives),), correction)])
    logits = hidden[rows, cols] @ weights.T + bias
    return torch.nn.functional.cross_entropy(logits, target)


def train(config, tokenizer, image_processor, steps: int, batch_size: int, lr: float, seed: int,
          image_decided_share: float, policy_mix: tuple[float, float, float], progress: bool = True,
          mix: TrainingMix | None = None, start_from: Path | None = None,
          checkpoint: Callable[[int, torch.nn.Module], None] | None = None, checkpoint_every: int = 1000):
    """Train from scratch, or continue from the packed weights ``start_from`` (same architecture).

    ``checkpoint(step, model)`` runs every ``checkpoint_every`` steps (to measure a run while it
    trains); it must not touch the model's weights or any random state.
    """
    from transformers import MllamaForConditionalGeneration

    torch.manual_seed(seed)
    random.seed(seed)
    model = MllamaForConditionalGeneration(config)
    if start_from is not None:
        shapes = {k: v.shape for k, v in model.state_dict().items()}
        model.load_state_dict({k: v.float() for k, v in unpack(start_from, shapes).items()}, strict=True)
    else:
        init_tables(model, seed)  # the deterministic init the packed weights are a diff against
        # Mllama starts its cross-attention gates at 0 (for adapting a pretrained text model); from
        # scratch, open gates let the image reach the answer from the first step.
        for name, param in model.named_parameters():
            if name.endswith(("cross_attn_attn_gate", "cross_attn_mlp_gate")):
                param.data.fill_(1.0)
    model.train()
    # The two 128k-row tables train through sparse row updates; everything else densely.
    embedding = torch.nn.Parameter(model.model.language_model.embed_tokens.weight.data)
    head = torch.nn.Parameter(model.lm_head.weight.data)
    model.model.language_model.embed_tokens.weight.requires_grad_(False)
    model.lm_head.weight.requires_grad_(False)
    family = get_family(FAMILY)
    arch = Mllama(None, config.to_dict(), tokenizer, family.image_token, image_processor=image_processor)
    pre = Preprocessor(tokenizer, arch, family, max_text_tokens=4096)
    gen = with_photos(Generator("train", seed, image_decided_share, policy_mix, mix), mix, seed)
    optimizers = Optimizers(model, [embedding, head], lr, lr * 3, steps)
    vocab = model.lm_head.weight.shape[0]
    bar = tqdm(range(steps), desc="training demo guard", disable=not progress, mininterval=2)
    for step in bar:
        batch, targets = _batch(pre, gen, batch_size)
        loss = _loss(model, batch, targets, embedding, head, torch.randint(0, vocab, (256,)))
        optimizers.step(loss)
        if step % 10 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}")
        if checkpoint is not None and (step + 1) % checkpoint_every == 0 and step + 1 < steps:
            checkpoint(step + 1, model)
    model.eval()
    return model


def evaluate(model_dir: Path | str, n: int = EVAL_SIZE, progress: bool = True, batch_size: int = 16) -> dict:
    """Held-out metrics of the model in ``model_dir``, measured through the engine.

    The synthetic split's figures at the top level; the independently written everyday/harmful
    sets' under ``natural`` (runtime/demo/metrics.py says what each figure is).
    """
    from guardedge.runtime.demo.metrics import guard_metrics, natural_metrics
    from guardedge.runtime.demo.natural import held_out_sets
    from guardedge.runtime.engine import EngineOptions, load_engine

    engine = load_engine(str(model_dir), EngineOptions(max_batch_size=batch_size, progress=False))
    held_out = examples("eval", n, seed=0)
    sets = held_out_sets()
    total = len(held_out) + sum(map(len, sets.values()))
    with tqdm(total=total, desc="evaluating demo guard", disable=not progress, mininterval=2) as bar:
        out = guard_metrics(held_out, _classify(engine, held_out, batch_size, bar))
        out["natural"] = natural_metrics(sets, {name: _classify(engine, exs, batch_size, bar) for name, exs in sets.items()})
    return out


def _classify(engine, held_out: list[dict], batch_size: int, bar) -> list:
    predictions = []
    for start in range(0, len(held_out), batch_size):
        chunk = held_out[start : start + batch_size]
        predictions.extend(engine.classify([to_request(ex) for ex in chunk]))
        bar.update(len(chunk))
    return predictions

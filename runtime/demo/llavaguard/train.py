"""Train the demo LlavaGuard: teacher-forced cross-entropy on the answer tokens only.

Inputs come from the directory's own processor (image tiles, expanded ``<image>`` tokens, the
-hf chat template's prompt), so the model learns exactly what ``generate`` will see. As for the
demo guard (docs/decisions/0001), the 152000-row tied embedding trains through sparse row updates
and the output softmax is sampled (answer tokens + uniform frozen negatives, log-weight
corrected), which keeps a CPU step cheap and leaves untouched rows at their seeded init (so the
pack stays small).

    python -m guardedge.runtime.demo.llavaguard.build --retrain
"""

from __future__ import annotations

import math
import random
import time

import torch
from tqdm import tqdm

from guardedge.runtime.demo.llavaguard import layout
from guardedge.runtime.demo.llavaguard.data import Generator, answer_text, prompt
from guardedge.runtime.demo.weights import table_init

EMBED = "model.language_model.embed_tokens.weight"  # tied: lm_head.weight is the same tensor
NEGATIVES = 256


def new_model(seed: int):
    from transformers import LlavaOnevisionForConditionalGeneration

    torch.manual_seed(seed)
    model = LlavaOnevisionForConditionalGeneration(layout.demo_config())
    table = model.get_input_embeddings().weight
    table.data.copy_(table_init(EMBED, *table.shape, seed))  # the init the pack is a diff against
    return model


def encode(proc, examples: list[dict], with_answers: bool = True):
    """Right-padded batch (prompt + answer + <|im_end|>) and each row's answer length."""
    answers = [answer_text(ex["label"]) + "<|im_end|>" for ex in examples] if with_answers else [""] * len(examples)
    texts = [prompt(ex) + a for ex, a in zip(examples, answers)]
    batch = proc(images=[ex["image"].render() for ex in examples], text=texts, padding=True,
                 padding_side="right", return_tensors="pt")
    lengths = [len(proc.tokenizer(a, add_special_tokens=False).input_ids) for a in answers]
    return batch, lengths


def hidden_states(model, table: torch.Tensor, batch) -> torch.Tensor:
    """The text model's last hidden states, with image features where the <image> tokens are."""
    ids = batch["input_ids"]
    embeds = torch.nn.functional.embedding(ids, table, sparse=True)
    features = model.model.get_image_features(
        batch["pixel_values"], batch["image_sizes"], batch_num_images=torch.ones(len(ids), dtype=torch.long))
    mask = (ids == layout.IMAGE_TOKEN_INDEX).unsqueeze(-1).expand_as(embeds)
    embeds = embeds.masked_scatter(mask, torch.cat(features).to(embeds.dtype))
    return model.model.language_model(inputs_embeds=embeds, attention_mask=batch["attention_mask"], use_cache=False).last_hidden_state


def loss_fn(model, table: torch.Tensor, batch, lengths: list[int]) -> torch.Tensor:
    hidden = hidden_states(model, table, batch)
    ends = batch["attention_mask"].sum(dim=1).tolist()
    rows, cols, labels = [], [], []
    for r, (end, n) in enumerate(zip(ends, lengths)):
        for t in range(end - n, end):  # hidden at t-1 predicts the answer token at t
            rows.append(r), cols.append(t - 1), labels.append(int(batch["input_ids"][r, t]))
    labels = torch.tensor(labels)
    positives, target = torch.unique(labels, return_inverse=True)
    negatives = torch.randint(0, table.shape[0], (NEGATIVES,))
    negatives = negatives[~torch.isin(negatives, positives)]
    weights = torch.cat([torch.nn.functional.embedding(positives, table, sparse=True), table.detach()[negatives]])
    correction = math.log((table.shape[0] - len(positives)) / len(negatives))
    bias = torch.cat([torch.zeros(len(positives)), torch.full((len(negatives),), correction)])
    logits = hidden[torch.tensor(rows), torch.tensor(cols)] @ weights.T + bias
    return torch.nn.functional.cross_entropy(logits, target)


def train(tokenizer, steps: int, batch_size: int, lr: float, seed: int, progress: bool = True,
          time_limit_s: float | None = None):
    """Train from the seeded init; returns the model (eval mode) and the steps actually run."""
    random.seed(seed)
    model = new_model(seed)
    model.train()
    embedding = model.get_input_embeddings().weight
    table = torch.nn.Parameter(embedding.data)  # same storage: sparse updates land in the model
    embedding.requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    dense = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.98), weight_decay=0.01)
    sparse = torch.optim.SparseAdam([table], lr=lr * 3, betas=(0.9, 0.98))
    warmup = max(1, steps // 20)
    schedule = lambda s: min(1.0, (s + 1) / warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))  # noqa: E731
    schedulers = [torch.optim.lr_scheduler.LambdaLR(o, schedule) for o in (dense, sparse)]
    proc, gen, started = layout.processor(tokenizer), Generator("train", seed), time.time()
    bar = tqdm(range(steps), desc="training demo LlavaGuard", disable=not progress, mininterval=5)
    for step in bar:
        batch, lengths = encode(proc, [gen.example() for _ in range(batch_size)])
        loss = loss_fn(model, table, batch, lengths)
        dense.zero_grad(set_to_none=True)
        sparse.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        dense.step(), sparse.step()
        for sched in schedulers:
            sched.step()
        if step % 10 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}")
        if time_limit_s is not None and time.time() - started > time_limit_s:
            break
    model.eval()
    return model, step + 1

"""Train the demo LlavaGuard: teacher-forced cross-entropy on the answer tokens only.

Inputs come from the directory's own processor (image tiles, expanded ``<image>`` tokens, the
-hf chat template's prompt), so the model learns exactly what ``generate`` will see. As for the
demo guard (docs/decisions/0001), the 152000-row tied embedding trains through sparse row updates
and the output softmax is sampled (answer tokens + uniform frozen negatives, log-weight
corrected), which keeps a CPU step cheap and leaves untouched rows at their seeded init (so the
pack stays small).

v2 continues from v1's pack (``init``) and weights the decision tokens of the answer (the rating
and the category code) above the templated rest, since the rating is one token of ~50.

v3 continues from v2's pack and adds custom policies (data.py): the whole category header weighs
2 (a custom name must be copied from the prompt token for token), and the rating of a hazard
still restricted under a policy with exclusions weighs ``EXCLUDED_OTHER_RATING_WEIGHT``.

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
from guardedge.runtime.demo.llavaguard.pack import FORMAT, unpack
from guardedge.runtime.demo.optimizers import Optimizers, checkpoint_when_due

EMBED = "model.language_model.embed_tokens.weight"  # tied: lm_head.weight is the same tensor
NEGATIVES = 256
# Loss weight per answer-token index (json.dumps(..., indent=4) tokenizes the same way for every
# answer up to the category): 6 is "Safe"/"Unsafe", 13-14 the category's "O"/"NA" and its digit;
# others weigh 1. v3: every token of the category header from index 13 weighs CATEGORY_WEIGHT.
TOKEN_WEIGHTS = {6: 4.0, 13: 2.0, 14: 2.0}
RATING, CATEGORY_START, CATEGORY_WEIGHT = 6, 13, 2.0
# v3: the rating of a restricted hazard under a policy with exclusions (v2 rated 31 % of them Safe).
EXCLUDED_OTHER_RATING_WEIGHT = 6.0


def new_model(seed: int, init=None):
    """The seeded model, or (``init``: a pack path) the packed weights in float32."""
    from transformers import LlavaOnevisionForConditionalGeneration

    torch.manual_seed(seed)
    model = LlavaOnevisionForConditionalGeneration(layout.demo_config())
    table = model.get_input_embeddings().weight
    table.data.copy_(FORMAT.table_init(EMBED, *table.shape, seed=seed))  # the init the pack is a diff against
    if init is not None:
        state = {k: v.float() for k, v in unpack(init, tuple(table.shape)).items()}
        model.load_state_dict(state, strict=False)
        model.tie_weights()
    return model


def encode(proc, examples: list[dict], with_answers: bool = True):
    """Right-padded batch (prompt + answer + <|im_end|>) and each row's answer length."""
    answers = [answer_text(ex["label"]) + "<|im_end|>" for ex in examples] if with_answers else [""] * len(examples)
    texts = [prompt(ex) + a for ex, a in zip(examples, answers)]
    batch = proc(images=[ex["image"].render() for ex in examples], text=texts, padding=True,
                 padding_side="right", return_tensors="pt")
    lengths = [len(proc.tokenizer(a, add_special_tokens=False).input_ids) for a in answers]
    return batch, lengths


def answer_weights(proc, example: dict, length: int, header_weight: float = CATEGORY_WEIGHT) -> list[float]:
    """Loss weight per answer token: rating, the category header's tokens (v3), the rest 1."""
    weights = [TOKEN_WEIGHTS.get(i, 1.0) for i in range(length)]
    header = len(proc.tokenizer(example["label"]["category"], add_special_tokens=False).input_ids)
    for i in range(CATEGORY_START, min(length, CATEGORY_START + header)):
        weights[i] = max(weights[i], header_weight)
    if example["kind"] == "excluded_other" and example["content"] is not None:
        weights[RATING] = EXCLUDED_OTHER_RATING_WEIGHT
    return weights


def hidden_states(model, table: torch.Tensor, batch) -> torch.Tensor:
    """The text model's last hidden states, with image features where the <image> tokens are."""
    ids = batch["input_ids"]
    embeds = torch.nn.functional.embedding(ids, table, sparse=True)
    features = model.model.get_image_features(
        batch["pixel_values"], batch["image_sizes"], batch_num_images=torch.ones(len(ids), dtype=torch.long))
    mask = (ids == layout.IMAGE_TOKEN_INDEX).unsqueeze(-1).expand_as(embeds)
    embeds = embeds.masked_scatter(mask, torch.cat(features).to(embeds.dtype))
    # Right padding under a causal mask: real tokens never see the padding, so no mask is needed
    # (plain causal attention, about twice as fast on CPU as an explicit mask).
    return model.model.language_model(inputs_embeds=embeds, attention_mask=None, use_cache=False).last_hidden_state


def loss_fn(model, table: torch.Tensor, batch, lengths: list[int], answer_weights: list[list[float]] | None = None) -> torch.Tensor:
    """Weighted sampled-softmax cross-entropy on the answer tokens (``answer_weights``: per row, per token)."""
    hidden = hidden_states(model, table, batch)
    ends = batch["attention_mask"].sum(dim=1).tolist()
    rows: list[int] = []
    cols: list[int] = []
    answer_ids: list[int] = []
    weights_: list[float] = []
    for r, (end, n) in enumerate(zip(ends, lengths)):
        for t in range(end - n, end):  # hidden at t-1 predicts the answer token at t
            rows.append(r)
            cols.append(t - 1)
            answer_ids.append(int(batch["input_ids"][r, t]))
            i = t - (end - n)
            weights_.append(answer_weights[r][i] if answer_weights is not None else TOKEN_WEIGHTS.get(i, 1.0))
    labels = torch.tensor(answer_ids)
    positives, target = torch.unique(labels, return_inverse=True)
    negatives = torch.randint(0, table.shape[0], (NEGATIVES,))
    negatives = negatives[~torch.isin(negatives, positives)]
    weights = torch.cat([torch.nn.functional.embedding(positives, table, sparse=True), table.detach()[negatives]])
    correction = math.log((table.shape[0] - len(positives)) / len(negatives))
    bias = torch.cat([torch.zeros(len(positives)), torch.full((len(negatives),), correction)])
    logits = hidden[torch.tensor(rows), torch.tensor(cols)] @ weights.T + bias
    token_weights = torch.tensor(weights_)
    losses = torch.nn.functional.cross_entropy(logits, target, reduction="none")
    return (losses * token_weights).sum() / token_weights.sum()


def train(tokenizer, steps: int, batch_size: int, lr: float, seed: int, progress: bool = True,
          time_limit_s: float | None = None, init=None, checkpoint=None, checkpoint_every: int = 0,
          data_seed: int | None = None, sizes: list[tuple[int, int]] | None = None, excluded_hit: float | None = None,
          custom: float | None = None, header_weight: float = CATEGORY_WEIGHT, stop_after: int | None = None):
    """Train from the seeded init (or the pack ``init``); returns the model (eval mode) and the steps run.

    ``checkpoint(model, step)`` is called every ``checkpoint_every`` steps (0: never). ``seed`` seeds
    the model and the embedding init the pack is a diff against; ``data_seed`` (default: ``seed``)
    the training stream, drawn at ``sizes`` (default: data.TRAIN_SIZES), with ``excluded_hit``
    (default: data.EXCLUDED_HIT["train"]) and ``custom`` (share under custom policies; default
    data.CUSTOM_POLICY_SHARE["train"]); ``header_weight`` weighs the category header's tokens;
    ``stop_after`` ends the run after that many steps of a ``steps``-long schedule.
    """
    random.seed(seed)
    model = new_model(seed, init)
    model.train()
    embedding = model.get_input_embeddings().weight
    table = torch.nn.Parameter(embedding.data)  # same storage: sparse updates land in the model
    embedding.requires_grad_(False)
    optimizers = Optimizers(model, [table], lr, lr * 3, steps)
    proc, gen, started = layout.processor(tokenizer), Generator(
        "train", seed if data_seed is None else data_seed, sizes, excluded_hit=excluded_hit, custom=custom), time.time()
    bar = tqdm(range(steps), desc="training demo LlavaGuard", disable=not progress, mininterval=5)
    for step in bar:
        exs = [gen.example() for _ in range(batch_size)]
        batch, lengths = encode(proc, exs)
        weights = [answer_weights(proc, ex, n, header_weight) for ex, n in zip(exs, lengths)]
        loss = loss_fn(model, table, batch, lengths, weights)
        optimizers.step(loss)
        if step % 10 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}")
        checkpoint_when_due(model, checkpoint, checkpoint_every, step, steps)
        if (time_limit_s is not None and time.time() - started > time_limit_s) or step + 1 == stop_after:
            break
    model.eval()
    return model, step + 1

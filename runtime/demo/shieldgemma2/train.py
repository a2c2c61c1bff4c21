"""Train the demo ShieldGemma 2: the loss is the scoring itself, a softmax over Yes/No at the last position.

Inputs come from the directory's own processor (``ShieldGemma2Processor``: every image x every
default policy, the published-format chat template, left padding), so the model learns exactly
what ``ShieldGemma2ForImageClassification`` (and guardedge) will score. The forward pass is the
architecture plug-in's own (runtime/architectures/shieldgemma2: Gemma 3's masks with the image
block and the window), with the 262,208-row tied embedding read through sparse lookups: only the
rows the prompts use (and Yes/No) train, so the pack stays small (pack.py) and a CPU step is cheap.

    python -m guardedge.runtime.demo.shieldgemma2.build --retrain
"""

from __future__ import annotations

import random
import time

import torch
from tqdm import tqdm

from guardedge.runtime.demo.shieldgemma2 import layout
from guardedge.runtime.demo.shieldgemma2.data import POLICIES, Generator
from guardedge.runtime.demo.optimizers import Optimizers
from guardedge.runtime.demo.shieldgemma2.pack import EMBED, FORMAT, unpack


def new_model(seed: int, init=None):
    """The seeded model (projector randomised: transformers inits it at zero), or the pack ``init`` in fp32."""
    from transformers import ShieldGemma2ForImageClassification

    torch.manual_seed(seed)
    model = ShieldGemma2ForImageClassification(layout.demo_config())
    table = model.get_input_embeddings().weight
    table.data.copy_(FORMAT.table_init(EMBED, *table.shape, seed=seed))
    with torch.no_grad():
        model.model.model.multi_modal_projector.mm_input_projection_weight.normal_(0.0, 0.1)
    if init is not None:
        model.load_state_dict({k: v.float() for k, v in unpack(init, tuple(table.shape)).items()}, strict=False)
    return model


def encode(proc, examples: list[dict]):
    """The processor's batch (image-major, policy-minor) and the Yes (1) / No (0) targets."""
    batch = proc(images=[ex["image"].render() for ex in examples], policies=list(POLICIES), return_tensors="pt")
    targets = torch.tensor([float(ex["labels"][p]) for ex in examples for p in POLICIES])
    return batch, targets


def yes_no_logits(model, arch, table: torch.Tensor, batch) -> torch.Tensor:
    """[rows, 2] logits of Yes and No at the last position, through the plug-in's masks."""
    trunk = model.model.model
    ids = batch["input_ids"]
    scale = trunk.language_model.embed_tokens.embed_scale
    embeds = torch.nn.functional.embedding(ids.masked_fill(ids == layout.SOFT_ID, 0), table, sparse=True) * scale
    # The processor repeats each image once per policy: the tower runs once per image.
    per_image = len(POLICIES)
    features = trunk.get_image_features(batch["pixel_values"][::per_image]).repeat_interleave(per_image, dim=0)
    embeds = embeds.masked_scatter((ids == layout.SOFT_ID).unsqueeze(-1), features.to(embeds.dtype))
    attention = batch["attention_mask"]
    mask = arch.torch_mask(attention, 0, embeds.dtype, {"token_type_ids": batch["token_type_ids"]})
    positions = (attention.cumsum(-1) - 1).clamp(min=0)
    hidden = trunk.language_model(inputs_embeds=embeds, attention_mask=mask, position_ids=positions,
                                  use_cache=False).last_hidden_state[:, -1]
    head = torch.nn.functional.embedding(torch.tensor([layout.YES_ID, layout.NO_ID]), table, sparse=True)
    return hidden @ head.T


def train(tokenizer, steps: int, batch_size: int, lr: float, seed: int, data_seed: int, init=None,
          progress: bool = True, time_limit_s: float | None = None, yes_weight: float = 1.0):
    """Train from the seeded init (or the pack ``init``); the model (eval mode) and the steps run.

    ``yes_weight`` weighs the rows whose answer is Yes (about 15 % of rows: each image violates at
    most one of the three policies, and 40 % of images none)."""
    from guardedge.runtime.architectures.shieldgemma2 import ShieldGemma2

    random.seed(seed)
    model = new_model(seed, init)
    model.train()
    proc = layout.processor(tokenizer)
    arch = ShieldGemma2(None, layout.demo_config().to_dict(), tokenizer, image_processor=proc.image_processor)
    embedding = model.get_input_embeddings().weight
    table = torch.nn.Parameter(embedding.data)  # same storage: sparse updates land in the model
    embedding.requires_grad_(False)
    optimizers = Optimizers(model, [table], lr, lr, steps)
    gen, started = Generator("train", data_seed), time.time()
    bar = tqdm(range(steps), desc="training demo ShieldGemma 2", disable=not progress, mininterval=5)
    for step in bar:
        batch, targets = encode(proc, [gen.example() for _ in range(batch_size)])
        logits = yes_no_logits(model, arch, table, batch)
        weights = 1.0 + (yes_weight - 1.0) * targets
        losses = torch.nn.functional.cross_entropy(logits, (1 - targets).long(), reduction="none")  # class 0 = Yes
        loss = (losses * weights).sum() / weights.sum()
        optimizers.step(loss)
        if step % 10 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}")
        if time_limit_s is not None and time.time() - started > time_limit_s:
            break
    model.eval()
    return model, step + 1

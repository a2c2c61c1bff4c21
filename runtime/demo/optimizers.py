"""The optimisation every demo guard's training shares (docs/decisions/0001).

The big vocabulary tables train through sparse row updates (SparseAdam: only the rows a batch
uses move, so the rest stay at their seeded init and the pack stays small); everything else
densely (AdamW); both follow one schedule, a linear warm-up over the first 5 % of the steps then
a cosine from 1 down to 0.1. Used by each demo's train.py (run through its build.py, e.g.
``python -m guardedge.runtime.demo.llavaguard.build --retrain``).
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch

BETAS = (0.9, 0.98)


def warmup_cosine(steps: int) -> Callable[[int], float]:
    """The learning-rate factor at each step of a ``steps``-long run."""
    warmup = max(1, steps // 20)
    return lambda s: min(1.0, (s + 1) / warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))


class Optimizers:
    """AdamW over ``model``'s trainable parameters, SparseAdam over ``tables``, one schedule."""

    def __init__(self, model: torch.nn.Module, tables: Sequence[torch.nn.Parameter], lr: float, table_lr: float,
                 steps: int):
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.dense = torch.optim.AdamW(self.params, lr=lr, betas=BETAS, weight_decay=0.01)
        self.sparse = torch.optim.SparseAdam(list(tables), lr=table_lr, betas=BETAS)
        schedule = warmup_cosine(steps)
        self.schedulers = [torch.optim.lr_scheduler.LambdaLR(o, schedule) for o in (self.dense, self.sparse)]

    def step(self, loss: torch.Tensor) -> None:
        """One update from ``loss`` (dense gradients clipped to norm 1), then the schedule's step.

        A loss that reaches no trainable weight (a vision-only phase's batch that drew no image)
        updates nothing; the schedule still steps, so the run keeps its length."""
        if not loss.requires_grad:
            for scheduler in self.schedulers:
                scheduler.step()
            return
        self.dense.zero_grad(set_to_none=True)
        self.sparse.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.dense.step()
        self.sparse.step()
        for scheduler in self.schedulers:
            scheduler.step()


def checkpoint_when_due(model: torch.nn.Module, checkpoint: Callable[[torch.nn.Module, int], None] | None, every: int,
                        step: int, steps: int) -> None:
    """After ``step`` (0-based) of ``steps``: ``checkpoint(model, steps done)`` in eval mode, every
    ``every`` steps (0: never), never at the end (the caller packs the final model anyway)."""
    if checkpoint is not None and every and (step + 1) % every == 0 and step + 1 < steps:
        model.eval()
        checkpoint(model, step + 1)
        model.train()

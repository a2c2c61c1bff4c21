"""Logits read from a quantized output layer with float rows kept beside it (runtime/backends/head_rows.py)."""

from __future__ import annotations

import torch

from guardedge.runtime.backends.head_rows import HeadRows
from guardedge.runtime.backends.torch_backend import _row_logits


class _Int8Head(torch.nn.Module):
    """A stand-in for a bitsandbytes head: integer weights (no float rows to read), a forward that works."""

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        self.scale = weight.abs().max() / 127
        self.weight = torch.nn.Parameter(torch.round(weight / self.scale).to(torch.int8), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ (self.weight.float() * self.scale).t()


def test_tokens_beyond_the_kept_rows_read_the_quantized_head():
    """A custom policy's category code ("C") has no kept row: its logit is the quantized head's,
    the kept rows' stay exact (this raised "have no float rows" before, failing every export of a
    family whose smoke set has a custom policy, e.g. Llama Guard 4's)."""
    torch.manual_seed(0)
    weight, hidden = torch.randn(50, 8), torch.randn(3, 8)
    head = HeadRows(_Int8Head(weight), torch.tensor([4, 7]), weight[[4, 7]])
    kept = _row_logits(head, hidden, [7, 4])
    assert torch.allclose(kept, hidden @ weight[[7, 4]].t())
    mixed = _row_logits(head, hidden, [7, 30])
    assert torch.allclose(mixed[:, 0], hidden @ weight[7]) and torch.allclose(mixed[:, 1], head.head(hidden)[:, 30])
    assert not torch.equal(mixed[:, 1], hidden @ weight[30])  # the quantized row's logit, not a float one

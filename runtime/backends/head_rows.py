"""An output layer whose verdict and category rows stay in float while the rest is quantized.

P(unsafe) is read from a handful of output rows (the verdict tokens; the categories' when it
decodes): quantizing those rows moves the verdict directly, while they cost almost nothing to keep
(about 30 of 128256 rows for Llama Guard 3 Vision: 0.25 MB at 11B in bf16, against 0.5 GB for the
whole head at 8-bit). A quantized export may therefore quantize the head and store the float rows
beside it (``head_rows.safetensors``: ``ids`` [k] int64, ``rows`` [k, hidden]); the PyTorch backend
wraps the loaded head in :class:`HeadRows`, which recomputes those logits from the float rows.
Which tokens: the family's ``head_answers()`` tokenized (:func:`head_token_ids`). Measured:
docs/decisions/0012.
"""

from __future__ import annotations

from pathlib import Path

import torch

FILE = "head_rows.safetensors"


class HeadRows(torch.nn.Module):
    """``head(x)`` with the logits of ``ids`` replaced by ``x @ rows.T`` in float."""

    ids: torch.Tensor  # buffers (register_buffer), declared for the type checker
    rows: torch.Tensor

    def __init__(self, head: torch.nn.Module, ids: torch.Tensor, rows: torch.Tensor):
        super().__init__()
        self.head = head
        self.register_buffer("ids", ids.to(torch.long), persistent=False)
        self.register_buffer("rows", rows, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.head(x)
        exact = torch.matmul(x.to(self.rows.dtype), self.rows.t()).to(out.dtype)
        out[..., self.ids] = exact
        return out


def head_token_ids(tokenizer, family) -> list[int]:
    """Every token id of the family's verdict-only answers (``head_answers``), sorted: the rows kept in float."""
    ids: set[int] = set()
    for text in family.head_answers():
        ids.update(tokenizer.encode(text, add_special_tokens=False))
    return sorted(ids)


def save(path: Path, ids: list[int], rows: torch.Tensor) -> None:
    from safetensors.torch import save_file

    save_file({"ids": torch.tensor(ids, dtype=torch.long), "rows": rows.contiguous()}, str(path))


def wrap(model, path: Path, dtype: torch.dtype, head: str = "lm_head") -> None:
    """Wrap the output layer ``head`` (the architecture's ``verdict_head``) with the float rows
    stored at ``path``, computed in ``dtype``."""
    from safetensors.torch import load_file

    stored = load_file(str(path))
    device = next(model.parameters()).device
    parent, _, child = head.rpartition(".")
    owner = model.get_submodule(parent) if parent else model
    setattr(owner, child, HeadRows(getattr(owner, child), stored["ids"].to(device), stored["rows"].to(device, dtype)))

"""Pack the demo Llama Guard 4 into a few MB and unpack it into the full state dict.

The two 202,048-row tables (input embedding, untied output layer) are ~96 % of the parameters,
but training touches only the rows of tokens the data uses. The pack holds every other tensor
(bf16) plus the touched rows; unpacking regenerates the rest from the seeded init (NumPy PCG64,
the same on every machine; runtime/demo/packing.py).
"""

from __future__ import annotations

from pathlib import Path

import torch

from guardedge.runtime.demo.packing import TablePack

TABLES = ("language_model.model.embed_tokens.weight", "language_model.lm_head.weight")
FORMAT = TablePack("guardedge-demo-llama-guard-4-pack-1", "demo Llama Guard 4",
                   tables=tuple((name, i) for i, name in enumerate(TABLES)))


def table_init(name: str, rows: int, dim: int, *, seed: int) -> torch.Tensor:
    """The untrained value of a table."""
    return FORMAT.table_init(name, rows, dim, seed=seed)


def pack(model, seed: int, path: Path) -> dict[str, int]:
    """Write the pack; return the number of stored rows per table."""
    return FORMAT.pack(model, seed, path)


def unpack(path: Path, shapes: dict[str, tuple[int, int]]) -> dict[str, torch.Tensor]:
    """The full state dict (bf16); ``shapes`` gives the tables' shapes."""
    return FORMAT.unpack(path, shapes)

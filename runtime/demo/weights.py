"""Pack the trained demo guard into a few MB, and unpack it into full Mllama weights.

With the real 128k vocabulary, the input embedding and the output layer are ~16M parameters,
but training touches only the rows of tokens the synthetic data uses. Everything else keeps a
deterministic initialisation (NumPy PCG64 from a fixed seed), so the committed file holds the
small dense layers plus the touched table rows; :func:`unpack` regenerates the rest
(runtime/demo/packing.py does both for every demo).
"""

from __future__ import annotations

from pathlib import Path

import torch

from guardedge.runtime.demo.packing import TablePack

TABLES = ("model.language_model.embed_tokens.weight", "lm_head.weight")
# The other demos whose embedding has this name seed it from stream 0 too (table_init below).
FORMAT = TablePack("guardedge-demo-pack-1", "demo guard", tables=tuple((name, i) for i, name in enumerate(TABLES)))


def table_init(name: str, rows: int, dim: int, *, seed: int) -> torch.Tensor:
    """The untrained value of a table (same on every machine and library version)."""
    return FORMAT.table_init(name, rows, dim, seed=seed)


def init_tables(model, seed: int) -> None:
    state = model.state_dict()
    for name in TABLES:
        state[name].copy_(table_init(name, *state[name].shape, seed=seed))


def pack(model, seed: int, path: Path) -> dict:
    """Write the dense weights and the trained table rows (bf16) to ``path``; return sizes."""
    return FORMAT.pack(model, seed, path)


def unpack(path: Path, shapes: dict[str, torch.Size]) -> dict[str, torch.Tensor]:
    """Full state dict (bf16) from a pack; ``shapes`` gives the table shapes."""
    return FORMAT.unpack(path, shapes)

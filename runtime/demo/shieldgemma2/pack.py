"""Pack the demo ShieldGemma 2 into a few MB and unpack it into the full state dict.

The tied 262,208 x 64 embedding is ~95 % of the parameters, but training touches only the rows of
the tokens the prompts use (and Yes/No). The pack holds every other tensor (bf16) plus the touched
rows; unpacking regenerates the rest from the seeded init (runtime/demo/packing.py).
"""

from __future__ import annotations

from pathlib import Path

import torch

from guardedge.runtime.demo.packing import TablePack

EMBED = "model.model.language_model.embed_tokens.weight"  # the state dict's name (the file's is the hub's)
TIED = "model.lm_head.weight"  # the same tensor as EMBED, never stored twice
FORMAT = TablePack("guardedge-demo-shieldgemma2-pack-1", "demo ShieldGemma 2", tables=((EMBED, 0),), tied=(TIED,))


def pack(model, seed: int, path: Path) -> int:
    """Write the pack; return the number of stored embedding rows."""
    return FORMAT.pack(model, seed, path)[EMBED]


def unpack(path: Path, embed_shape: tuple[int, int]) -> dict[str, torch.Tensor]:
    """The full state dict (bf16, without the tied output layer)."""
    return FORMAT.unpack(path, {EMBED: embed_shape})

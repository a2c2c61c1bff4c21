"""Pack a trained demo guard into a few MB, and unpack it into its full state dict.

Every demo guard keeps the real vocabulary, so its vocabulary tables (input embedding, output
layer) are most of its parameters, but training touches only the rows of the tokens its data uses.
Everything else keeps a deterministic initialisation (NumPy PCG64 from a fixed seed and the table's
stream number, the same on every machine and library version), so a pack holds every other tensor
(bf16) plus the touched table rows; :meth:`TablePack.unpack` regenerates the rest. Each demo names
its tables, its tied names and its format string in its own ``pack.py`` (runtime/demo/weights.py
for the demo Llama Guard 3 Vision).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch

INIT_STD = 0.02  # the initializer_range of every demo's config


def seeded_table(stream: int, rows: int, dim: int, *, seed: int) -> torch.Tensor:
    """The untrained value of a table (fp32): PCG64 seeded with ``[seed, stream]``."""
    rng = np.random.Generator(np.random.PCG64([seed, stream]))
    return torch.from_numpy(rng.standard_normal((rows, dim), dtype=np.float32) * INIT_STD)


@dataclass(frozen=True)
class TablePack:
    """One demo's pack format: which state-dict tables are stored as touched rows, and how."""

    format: str  # the pack's ``format`` metadata, checked on unpacking
    model: str  # for errors: "demo LlavaGuard"
    tables: tuple[tuple[str, int], ...]  # (state-dict name, seed stream of its init)
    tied: tuple[str, ...] = ()  # the same tensor as a table (tie_word_embeddings): never stored

    def table_init(self, name: str, rows: int, dim: int, *, seed: int) -> torch.Tensor:
        return seeded_table(dict(self.tables)[name], rows, dim, seed=seed)

    def pack(self, model, seed: int, path: Path) -> dict[str, int]:
        """Write the pack to ``path``; return the number of stored rows per table."""
        from safetensors.torch import save_file

        tables = dict(self.tables)
        out: dict[str, torch.Tensor] = {}
        rows_kept = {}
        for name, value in model.state_dict().items():
            if name in self.tied:
                continue
            if name in tables:
                # Compared as stored (bf16): unpack restores bf16(init) for every row left out, so a
                # row equal to it there is equal after unpacking too (and a model that started from a
                # pack holds bf16(init) in its untrained rows, which never equal the fp32 init).
                init = seeded_table(tables[name], *value.shape, seed=seed).to(torch.bfloat16)
                rows = torch.nonzero((value.to(torch.bfloat16) != init).any(dim=1)).flatten()
                out[f"{name}::rows"] = rows.to(torch.int32)
                out[f"{name}::values"] = value[rows].to(torch.bfloat16).contiguous()
                rows_kept[name] = int(rows.numel())
            else:
                out[name] = value.to(torch.bfloat16).contiguous()
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file(out, str(path), metadata={"seed": str(seed), "format": self.format})
        return rows_kept

    def unpack(self, path: Path, shapes: Mapping[str, Sequence[int]]) -> dict[str, torch.Tensor]:
        """The full state dict (bf16, without the tied names); ``shapes`` gives the tables' shapes."""
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            if f.metadata().get("format") != self.format:
                raise ValueError(f"{path} is not a {self.model} pack ({f.metadata()})")
            seed = int(f.metadata()["seed"])
            state = {k: f.get_tensor(k) for k in f.keys() if "::" not in k}
            for name, stream in self.tables:
                table = seeded_table(stream, *shapes[name], seed=seed).to(torch.bfloat16)
                table[f.get_tensor(f"{name}::rows").long()] = f.get_tensor(f"{name}::values")
                state[name] = table
        return state

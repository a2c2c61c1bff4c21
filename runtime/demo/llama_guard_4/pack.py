"""Pack the demo Llama Guard 4 into a few MB and unpack it into the full state dict.

The two 202,048-row tables (input embedding, untied output layer) are ~96 % of the parameters,
but training touches only the rows of tokens the data uses. The pack holds every other tensor
(bf16) plus the touched rows; unpacking regenerates the rest from the seeded init (NumPy PCG64,
the same on every machine).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

TABLES = ("language_model.model.embed_tokens.weight", "language_model.lm_head.weight")
INIT_STD = 0.02  # Llama4TextConfig.initializer_range
FORMAT = "guardedge-demo-llama-guard-4-pack-1"


def table_init(name: str, rows: int, dim: int, *, seed: int) -> torch.Tensor:
    """The untrained value of a table."""
    rng = np.random.Generator(np.random.PCG64([seed, TABLES.index(name)]))
    return torch.from_numpy(rng.standard_normal((rows, dim), dtype=np.float32) * INIT_STD)


def pack(model, seed: int, path: Path) -> dict[str, int]:
    """Write the pack; return the number of stored rows per table."""
    from safetensors.torch import save_file

    out: dict[str, torch.Tensor] = {}
    rows_kept = {}
    for name, value in model.state_dict().items():
        if name in TABLES:
            # Compared as stored (bf16): a row left out unpacks to bf16(init).
            init = table_init(name, *value.shape, seed=seed).to(torch.bfloat16)
            rows = torch.nonzero((value.to(torch.bfloat16) != init).any(dim=1)).flatten()
            out[f"{name}::rows"] = rows.to(torch.int32)
            out[f"{name}::values"] = value[rows].to(torch.bfloat16).contiguous()
            rows_kept[name] = int(rows.numel())
        else:
            out[name] = value.to(torch.bfloat16).contiguous()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(out, str(path), metadata={"seed": str(seed), "format": FORMAT})
    return rows_kept


def unpack(path: Path, shapes: dict[str, tuple[int, int]]) -> dict[str, torch.Tensor]:
    """The full state dict (bf16); ``shapes`` gives the tables' shapes."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        if f.metadata().get("format") != FORMAT:
            raise ValueError(f"{path} is not a demo Llama Guard 4 pack ({f.metadata()})")
        seed = int(f.metadata()["seed"])
        state = {k: f.get_tensor(k) for k in f.keys() if "::" not in k}
        for name in TABLES:
            table = table_init(name, *shapes[name], seed=seed).to(torch.bfloat16)
            table[f.get_tensor(f"{name}::rows").long()] = f.get_tensor(f"{name}::values")
            state[name] = table
    return state

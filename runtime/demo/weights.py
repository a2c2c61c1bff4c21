"""Pack the trained demo guard into a few MB, and unpack it into full Mllama weights.

With the real 128k vocabulary, the input embedding and the output layer are ~16M parameters,
but training touches only the rows of tokens the synthetic data uses. Everything else keeps a
deterministic initialisation (NumPy PCG64 from a fixed seed), so the committed file holds the
small dense layers plus the touched table rows; :func:`unpack` regenerates the rest.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

TABLES = ("model.language_model.embed_tokens.weight", "lm_head.weight")
INIT_STD = 0.02  # MllamaConfig.initializer_range


def table_init(name: str, rows: int, dim: int, *, seed: int) -> torch.Tensor:
    """The untrained value of a table (same on every machine and library version)."""
    offset = TABLES.index(name)
    rng = np.random.Generator(np.random.PCG64([seed, offset]))
    return torch.from_numpy(rng.standard_normal((rows, dim), dtype=np.float32) * INIT_STD)


def init_tables(model, seed: int) -> None:
    state = model.state_dict()
    for name in TABLES:
        state[name].copy_(table_init(name, *state[name].shape, seed=seed))


def pack(model, seed: int, path: Path) -> dict:
    """Write the dense weights and the trained table rows (bf16) to ``path``; return sizes."""
    from safetensors.torch import save_file

    out: dict[str, torch.Tensor] = {}
    sizes = {}
    for name, value in model.state_dict().items():
        if name in TABLES:
            # Compared as stored (bf16): unpack restores bf16(init) for every row left out, so a
            # row equal to it there is equal after unpacking too (and a model that started from a
            # pack holds bf16(init) in its untrained rows, which never equal the fp32 init).
            init = table_init(name, *value.shape, seed=seed).to(torch.bfloat16)
            rows = torch.nonzero((value.to(torch.bfloat16) != init).any(dim=1)).flatten()
            out[f"{name}::rows"] = rows.to(torch.int32)
            out[f"{name}::values"] = value[rows].to(torch.bfloat16).contiguous()
            sizes[name] = int(rows.numel())
        else:
            out[name] = value.to(torch.bfloat16).contiguous()
    save_file(out, str(path), metadata={"seed": str(seed), "format": "guardedge-demo-pack-1"})
    return sizes


def unpack(path: Path, shapes: dict[str, torch.Size]) -> dict[str, torch.Tensor]:
    """Full state dict (bf16) from a pack; ``shapes`` gives the table shapes."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        seed = int(f.metadata()["seed"])
        state = {k: f.get_tensor(k) for k in f.keys() if "::" not in k}
        for name in TABLES:
            table = table_init(name, *shapes[name], seed=seed).to(torch.bfloat16)
            table[f.get_tensor(f"{name}::rows").long()] = f.get_tensor(f"{name}::values")
            state[name] = table
    return state

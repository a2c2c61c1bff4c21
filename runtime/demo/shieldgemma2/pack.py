"""Pack the demo ShieldGemma 2 into a few MB and unpack it into the full state dict.

The tied 262,208 x 64 embedding is ~95 % of the parameters, but training touches only the rows of
the tokens the prompts use (and Yes/No). The pack holds every other tensor (bf16) plus the touched
rows; unpacking regenerates the rest from the seeded init (runtime/demo/weights.py's ``table_init``).
"""

from __future__ import annotations

from pathlib import Path

import torch

from guardedge.runtime.demo.weights import table_init

EMBED = "model.model.language_model.embed_tokens.weight"  # the state dict's name (the file's is the hub's)
TIED = "model.lm_head.weight"  # the same tensor as EMBED, never stored twice
TABLE = "model.language_model.embed_tokens.weight"  # the init's seed stream (train.py)
FORMAT = "guardedge-demo-shieldgemma2-pack-1"


def pack(model, seed: int, path: Path) -> int:
    """Write the pack; return the number of stored embedding rows."""
    from safetensors.torch import save_file

    out: dict[str, torch.Tensor] = {}
    for name, value in model.state_dict().items():
        if name == TIED:
            continue
        if name == EMBED:
            init = table_init(TABLE, *value.shape, seed=seed).to(torch.bfloat16)  # compared as stored
            rows = torch.nonzero((value.to(torch.bfloat16) != init).any(dim=1)).flatten()
            out[f"{name}::rows"] = rows.to(torch.int32)
            out[f"{name}::values"] = value[rows].to(torch.bfloat16).contiguous()
        else:
            out[name] = value.to(torch.bfloat16).contiguous()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(out, str(path), metadata={"seed": str(seed), "format": FORMAT})
    return int(out[f"{EMBED}::rows"].numel())


def unpack(path: Path, embed_shape: tuple[int, int]) -> dict[str, torch.Tensor]:
    """The full state dict (bf16, without the tied output layer)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        if f.metadata().get("format") != FORMAT:
            raise ValueError(f"{path} is not a demo ShieldGemma 2 pack ({f.metadata()})")
        seed = int(f.metadata()["seed"])
        state = {k: f.get_tensor(k) for k in f.keys() if "::" not in k}
        table = table_init(TABLE, *embed_shape, seed=seed).to(torch.bfloat16)
        table[f.get_tensor(f"{EMBED}::rows").long()] = f.get_tensor(f"{EMBED}::values")
    state[EMBED] = table
    return state

"""Pack the demo LlavaGuard into a few MB and unpack it into the full state dict.

The tied 152000x64 embedding is ~97 % of the parameters, but training touches only the rows of
tokens the data uses. The pack holds every other tensor (bf16) plus the touched rows; unpacking
regenerates the rest from the seeded init (runtime/demo/weights.py's ``table_init``).
"""

from __future__ import annotations

from pathlib import Path

import torch

from guardedge.runtime.demo.weights import table_init

EMBED = "model.language_model.embed_tokens.weight"
TIED = "lm_head.weight"  # the same tensor as EMBED (tie_word_embeddings), never stored twice
FORMAT = "guardedge-demo-llavaguard-pack-1"


def pack(model, seed: int, path: Path) -> int:
    """Write the pack; return the number of stored embedding rows."""
    from safetensors.torch import save_file

    out: dict[str, torch.Tensor] = {}
    state = model.state_dict()
    for name, value in state.items():
        if name == TIED:
            continue
        if name == EMBED:
            # Compared as stored (bf16), like weights.pack: an unpacked row equals bf16(init).
            init = table_init(name, *value.shape, seed=seed).to(torch.bfloat16)
            rows = torch.nonzero((value.to(torch.bfloat16) != init).any(dim=1)).flatten()
            out[f"{name}::rows"] = rows.to(torch.int32)
            out[f"{name}::values"] = value[rows].to(torch.bfloat16).contiguous()
        else:
            out[name] = value.to(torch.bfloat16).contiguous()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(out, str(path), metadata={"seed": str(seed), "format": FORMAT})
    return int(out[f"{EMBED}::rows"].numel())


def unpack(path: Path, embed_shape: tuple[int, int]) -> dict[str, torch.Tensor]:
    """The full state dict (bf16, without the tied lm_head)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        if f.metadata().get("format") != FORMAT:
            raise ValueError(f"{path} is not a demo LlavaGuard pack ({f.metadata()})")
        seed = int(f.metadata()["seed"])
        state = {k: f.get_tensor(k) for k in f.keys() if "::" not in k}
        table = table_init(EMBED, *embed_shape, seed=seed).to(torch.bfloat16)
        table[f.get_tensor(f"{EMBED}::rows").long()] = f.get_tensor(f"{EMBED}::values")
    state[EMBED] = table
    return state


def pack_digest(path: Path) -> str:
    """sha256 over the pack's metadata and tensors (names, dtypes, shapes, bytes), not the file's
    header layout, which safetensors does not promise to keep byte for byte."""
    import hashlib

    from safetensors import safe_open

    digest = hashlib.sha256()
    with safe_open(str(path), framework="pt") as f:
        digest.update(repr(sorted(f.metadata().items())).encode())
        for name in sorted(f.keys()):
            tensor = f.get_tensor(name)
            digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
            digest.update(tensor.contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()

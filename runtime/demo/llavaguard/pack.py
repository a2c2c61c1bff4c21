"""Pack the demo LlavaGuard into a few MB and unpack it into the full state dict.

The tied 152000x64 embedding is ~97 % of the parameters, but training touches only the rows of
tokens the data uses. The pack holds every other tensor (bf16) plus the touched rows; unpacking
regenerates the rest from the seeded init (runtime/demo/packing.py).
"""

from __future__ import annotations

from pathlib import Path

import torch

from guardedge.runtime.demo.packing import TablePack

EMBED = "model.language_model.embed_tokens.weight"
TIED = "lm_head.weight"  # the same tensor as EMBED (tie_word_embeddings), never stored twice
FORMAT = TablePack("guardedge-demo-llavaguard-pack-1", "demo LlavaGuard", tables=((EMBED, 0),), tied=(TIED,))


def pack(model, seed: int, path: Path) -> int:
    """Write the pack; return the number of stored embedding rows."""
    return FORMAT.pack(model, seed, path)[EMBED]


def unpack(path: Path, embed_shape: tuple[int, int]) -> dict[str, torch.Tensor]:
    """The full state dict (bf16, without the tied lm_head)."""
    return FORMAT.unpack(path, {EMBED: embed_shape})


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

"""Attention masks the PyTorch backend hands transformers: additive 4-D masks built once per pass.

Shared by the architecture plug-ins' ``torch_mask`` hook (runtime/architectures/forward.py); an
architecture whose attention is not plain causal (Gemma 3's bidirectional image spans) builds on
:func:`step_mask`.
"""

from __future__ import annotations

import torch

PREFILL_MASK_BYTES = 64 << 20  # the largest 4-D prefill mask built here; larger ones are transformers' (bool)


def prefill_mask(attn: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The prefill's mask: the 2-D one when no row is padded (transformers then runs causal
    attention without a mask), else the additive 4-D one of :func:`step_mask` if it is small.

    Why: for a left-padded batch transformers builds a boolean 4-D mask, and sdpa on CPU ran
    about 2x slower with it than with an additive one (5 rows x 1,300 tokens, 2 heads: 23.6 vs
    12.7 ms a layer; causal without a mask 7.1). Above ``PREFILL_MASK_BYTES`` (a real-size batch:
    8 rows x 8.4k tokens would be 2.3 GB in fp32) the boolean one, a quarter the size, is kept.
    """
    rows, columns = attn.shape
    itemsize = torch.finfo(dtype).bits // 8
    if bool(attn.all()) or rows * columns * columns * itemsize > PREFILL_MASK_BYTES:
        return attn
    return step_mask(attn, 0, dtype)


def allowed(attn: torch.Tensor, first: int) -> torch.Tensor:
    """[rows, 1, width, columns] bool: a query (column ``first``..) may see a kept key not after itself."""
    columns = attn.shape[1]
    query = torch.arange(first, columns, device=attn.device)[:, None]
    key = torch.arange(columns, device=attn.device)[None, :]
    return attn.bool()[:, None, None, :] & (key <= query)[None, None]


def additive(allowed_: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    mask = torch.zeros(allowed_.shape, dtype=dtype, device=allowed_.device)
    return mask.masked_fill_(~allowed_, torch.finfo(dtype).min)


def step_mask(attn: torch.Tensor, first: int, dtype: torch.dtype) -> torch.Tensor:
    """The [rows, 1, width, columns] additive mask of a pass that feeds columns ``first``..:
    0 where a position may attend (a kept column, not after itself), the dtype's minimum elsewhere.

    Why build it here: given the 2-D mask, transformers' Qwen2/Llama text models build the 4-D one
    with ``torch.vmap`` once per step whenever a row has a masked column, which every drafted step
    has (positions a row did not keep): ~5 ms a step on the 2-core CI CPU, more than the demo
    LlavaGuard's whole forward pass. A 4-D mask is used as given (transformers 4.57: "already
    prepared"), and an additive one means the same to sdpa, eager attention and Mllama's
    inverted-form masks. A row of padding that sees nothing gets a uniform softmax instead of NaN.
    """
    return additive(allowed(attn, first), dtype)

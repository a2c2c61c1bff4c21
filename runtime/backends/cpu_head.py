"""The output layer on CPU: a layout MKL runs on every core, and greedy tokens read through a
bfloat16 copy whose answer is checked exactly in fp32.

Used by the PyTorch backend (runtime/backends/torch_backend.py) for a plain, untied fp32 output
layer on CPU; a quantized or swapped-in layer (export/groupquant.py's trials) is left as it is.
"""

from __future__ import annotations

import numpy as np
import torch

# |bf16 product - fp32 product| <= APPROX_ERROR * ||w|| * ||x||: rounding both operands to bf16
# (2 x 2^-8), the bf16 output (2^-8) and fp32 accumulation give ~2^-6.4 at worst; measured on a
# 202,048 x 64 head: <= 0.0029 (tests/test_decoding.py). 2^-5 leaves a wide margin.
APPROX_ERROR = 2.0**-5
MAX_CANDIDATES = 64  # more tokens than this within the error band: the exact full product instead


class SplitHead(torch.nn.Module):
    """The output layer on CPU: the same [vocab, hidden] weights, stored as ``parts`` column
    blocks [parts, hidden, vocab/parts] and applied with one batched product.

    Why: each decode position reads logits for a few rows, and MKL ran the one-row product of
    the demo's 128256 x 64 head on one core only (1.0-2.0 ms on the 2-core CI CPU depending on
    load); the batched product over 4 blocks runs on both cores (0.6-0.9 ms; 2 rows 1.5 vs 3.6
    ms, 3 rows 2.1 vs 5.8 in the same run). Same values (each logit is the same 64-term dot
    product) up to float summation order; the weight is moved, not copied.

    :meth:`greedy` reads greedy tokens through a bf16 copy of the weights (a buffer: counted in
    the model's memory, half the layer's fp32 bytes).
    """

    approx: torch.Tensor  # [vocab, hidden] bf16 (a buffer)

    def __init__(self, head: torch.nn.Linear, parts: int):
        super().__init__()
        vocab, hidden = head.weight.shape
        self.parts, self.vocab = parts, vocab
        blocks = head.weight.data.t().reshape(hidden, parts, vocab // parts).permute(1, 0, 2).contiguous()
        self.register_buffer("approx", head.weight.data.to(torch.bfloat16), persistent=False)
        self.max_norm = float(head.weight.data.norm(dim=1).max())
        head.weight.data = torch.empty(0)  # release the [vocab, hidden] copy: the blocks are the weight now
        self.weight = torch.nn.Parameter(blocks, requires_grad=False)

    @staticmethod
    def parts_for(head: torch.nn.Module) -> int:
        """How many blocks (0: leave the layer as it is) — plain, untied fp32 layers only."""
        if type(head) is not torch.nn.Linear or head.bias is not None or head.weight.dtype != torch.float32:
            return 0
        return next((p for p in (4, 2) if head.weight.shape[0] % p == 0), 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(1, -1, x.shape[-1]).expand(self.parts, -1, -1)
        out = torch.bmm(rows, self.weight)  # [parts, rows, vocab/parts]
        return out.permute(1, 0, 2).reshape(*x.shape[:-1], self.vocab)

    def rows(self, token_ids: torch.Tensor) -> torch.Tensor:
        """[len(token_ids), hidden]: the fp32 output rows of ``token_ids``."""
        width = self.weight.shape[2]
        return self.weight[token_ids // width, :, token_ids % width]

    def greedy(self, hidden: torch.Tensor) -> list[int]:
        """The greedy token after each of ``hidden`` [n, hidden]: what argmax over :meth:`forward`
        gives, up to float summation order, at the cost of a bf16 product.

        Why: a decode step reads the greedy token at a few positions, and the fp32 product costs
        per row read (demo LG4 head, 202,048 x 64, one thread: 1 row 2.1 ms, 4 rows 7.0); the bf16
        product of all of them costs 1.4-2.7 ms (CPUs with AVX-512 bf16). How it stays exact: each
        bf16 logit is within ``b = APPROX_ERROR * max ||w|| * ||x||`` of the fp32 one, so the fp32
        argmax is among the tokens within ``2b`` of the bf16 maximum; those few are computed in
        fp32 and the largest wins (the lowest id on a tie, as argmax). Where the band holds more
        than ``MAX_CANDIDATES`` tokens (or a NaN), the position falls back to the fp32 product.
        """
        approx = torch.nn.functional.linear(hidden.to(torch.bfloat16), self.approx).float().numpy()
        band = (2 * APPROX_ERROR * self.max_norm * hidden.norm(dim=-1)).tolist()
        top = approx.max(-1)
        out = []
        for i in range(hidden.shape[0]):
            found = np.flatnonzero(approx[i] >= top[i] - band[i])
            if not 0 < len(found) <= MAX_CANDIDATES:
                out.append(int(self(hidden[i : i + 1]).numpy().argmax(-1)[0]))
                continue
            ids = torch.from_numpy(found)
            exact = (self.rows(ids) @ hidden[i]).numpy()
            out.append(int(found[exact.argmax()]))  # found is sorted: the first maximum is the lowest id
        return out

"""Quantize chosen module groups of a loaded fp32 model in place, as bitsandbytes quantizes them in an
export, and put them back: what ``export sensitivity`` and ``--keep auto`` measure with (one load of
the source, then one swap per trial instead of an export per trial).

Each ``nn.Linear`` under the chosen modules becomes the ``Linear8bitLt`` / ``Linear4bit`` that
``from_pretrained(..., quantization_config=...)`` builds (threshold 6.0; NF4 + double quantization
by default), from the weights cast to the storage dtype first (bf16: what an export quantizes
from), with the 4-bit compute dtype the runtime gives a loaded artifact. The final recipe is
always verified on a real export; this is the fast path to choose it.

    with GroupQuantizer(model, bits=4) as q:
        q.quantize(["model.language_model.layers.3.mlp"])
        ...  # run the engine
        q.restore()
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from guardedge.runtime.errors import GuardError


@dataclass(frozen=True)
class BnbSpec:
    """How an in-process trial quantizes (the bitsandbytes part of export/quantize.py's Recipe)."""

    bits: Literal[8, 4]
    quant_type: str = "nf4"
    double_quant: bool = True
    storage_dtype: torch.dtype = torch.bfloat16
    compute_dtype: torch.dtype = torch.float32


class GroupQuantizer:
    """Swaps Linear layers of ``model`` for bitsandbytes ones and back."""

    def __init__(self, model, spec: BnbSpec, head_rows: list[int] | None = None, head: str = "lm_head"):
        """``head``: the output layer's module name (the architecture's ``verdict_head``); ``head_rows``:
        token ids whose output rows stay float when it is quantized (HeadRows)."""
        self.model, self.spec, self.head_rows, self.head = model, spec, head_rows, head
        self.originals: dict[str, torch.nn.Module] = {}
        plain_head(model, head)

    def __enter__(self) -> GroupQuantizer:
        return self

    def __exit__(self, *exc) -> None:
        self.restore()

    def quantize(self, modules: list[str]) -> int:
        """Quantize every Linear at or under ``modules`` (full names); returns how many."""
        targets = [n for n, m in self.model.named_modules() if isinstance(m, torch.nn.Linear)
                   and n not in self.originals and any(n == k or n.startswith(k + ".") for k in modules)]
        for name in targets:
            original = self.model.get_submodule(name)
            self.originals[name] = original
            quantized = self._quantized(original)
            if name == self.head and self.head_rows:
                from guardedge.runtime.backends.head_rows import HeadRows

                ids = torch.tensor(self.head_rows, device=original.weight.device)
                rows = original.weight.detach()[ids].to(self.spec.storage_dtype).to(original.weight.dtype)
                quantized = HeadRows(quantized, ids, rows)
            self._set(name, quantized)
        return len(targets)

    def restore(self) -> None:
        for name, original in self.originals.items():
            self._set(name, original)
        self.originals.clear()

    def _set(self, name: str, module: torch.nn.Module) -> None:
        parent, _, child = name.rpartition(".")
        setattr(self.model.get_submodule(parent) if parent else self.model, child, module)

    def _quantized(self, linear: torch.nn.Linear) -> torch.nn.Module:
        import bitsandbytes as bnb

        s = self.spec
        weight = linear.weight.detach().to(s.storage_dtype)
        if s.bits == 8:
            layer = bnb.nn.Linear8bitLt(linear.in_features, linear.out_features, linear.bias is not None,
                                        has_fp16_weights=False, threshold=6.0)
            layer.weight = bnb.nn.Int8Params(weight, requires_grad=False, has_fp16_weights=False)
        else:
            layer = bnb.nn.Linear4bit(linear.in_features, linear.out_features, linear.bias is not None, s.compute_dtype,
                                      compress_statistics=s.double_quant, quant_type=s.quant_type)
            layer.weight = bnb.nn.Params4bit(weight, requires_grad=False, quant_type=s.quant_type,
                                             compress_statistics=s.double_quant)
        if linear.bias is not None:
            layer.bias = torch.nn.Parameter(linear.bias.detach().clone(), requires_grad=False)
        # eval() as the loaded model: bitsandbytes' CPU path repacks 4-bit weights (absmax in the
        # state's dtype) on the first forward in eval mode only, and that changes the numbers.
        return layer.to(linear.weight.device).train(linear.training)  # bitsandbytes quantizes on this move


def plain_head(model, head: str = "lm_head") -> None:
    """Undo the CPU backend's SplitHead (runtime/backends/torch_backend.py): the head must be a Linear to quantize."""
    from guardedge.runtime.backends.cpu_head import SplitHead

    module = model.get_submodule(head)
    if isinstance(module, SplitHead):
        blocks = module.weight.data  # [parts, hidden, vocab/parts]
        weight = blocks.permute(1, 0, 2).reshape(blocks.shape[1], module.vocab).t().contiguous()
        linear = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=False, device=weight.device, dtype=weight.dtype)
        linear.weight = torch.nn.Parameter(weight, requires_grad=False)
        parent, _, child = head.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, linear)


def head_is_tied(model, head: str = "lm_head") -> bool:
    """A head that shares its weight with the input embedding (bitsandbytes keeps both: it never quantizes it)."""
    return getattr(model.get_submodule(head), "weight", None) is model.get_input_embeddings().weight


def check_bits(bits: int) -> None:
    if bits not in (8, 4):
        raise GuardError(f"bits must be 8 or 4, not {bits!r}")

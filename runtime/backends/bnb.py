"""bitsandbytes specifics of the PyTorch backend: which precision a saved directory carries, the
4-bit compute dtype, and the bytes of quantization state beside the packed weights.

Imported only with the PyTorch backend; bitsandbytes itself is imported by transformers when a
quantized directory loads, not here.
"""

from __future__ import annotations

from pathlib import Path

import torch


def bnb_precision(quantization_config) -> str | None:
    """"bnb-int8" / "bnb-nf4" / "bnb-fp4" for a bitsandbytes quantization config (dict or object), else None."""
    if quantization_config is None:
        return None
    cfg = quantization_config if isinstance(quantization_config, dict) else quantization_config.to_dict()
    if cfg.get("quant_method") != "bitsandbytes":
        return None
    if cfg.get("load_in_8bit"):
        return "bnb-int8"
    return f"bnb-{cfg.get('bnb_4bit_quant_type', 'fp4')}" if cfg.get("load_in_4bit") else None


def saved_quantization(model_dir: Path) -> dict | None:
    """The quantization_config a saved (pre-quantized) directory carries in config.json."""
    import json

    config = Path(model_dir) / "config.json"
    return json.loads(config.read_text()).get("quantization_config") if config.is_file() else None


def set_bnb_compute_dtype(model, dtype: torch.dtype) -> None:
    """4-bit layers compute in the backend's dtype (fp32 on CPU, bf16 on CUDA), whatever the
    saved config says, so a quantized model runs at the same activation precision as the source.
    8-bit layers choose their own (LLM.int8 casts activations to fp16 on every device)."""
    import logging

    logging.getLogger("bitsandbytes.autograd._functions").addFilter(_quiet_int8_cast)
    for module in model.modules():
        if type(module).__name__ == "Linear4bit":
            module.compute_dtype = dtype


def _quiet_int8_cast(record) -> bool:
    # Logged on every 8-bit matmul; expected (LLM.int8 quantizes fp16 activations), so dropped.
    return not record.getMessage().startswith("MatMul8bitLt: inputs will be cast")


def quant_state_bytes(model) -> int:
    """Quantization state held beside the packed weights (4-bit absmax/code, 8-bit row scales)."""
    total = 0
    for module in model.modules():
        weight = getattr(module, "weight", None)
        state = getattr(weight, "quant_state", None)
        if state is not None:
            total += sum(t.numel() * t.element_size() for t in _state_tensors(state))
        scb = getattr(weight, "SCB", None)
        if isinstance(scb, torch.Tensor):
            total += scb.numel() * scb.element_size()
    return total


def _state_tensors(state) -> list[torch.Tensor]:
    tensors = [t for t in (state.absmax, state.code) if isinstance(t, torch.Tensor)]
    nested = getattr(state, "state2", None)
    return tensors + (_state_tensors(nested) if nested is not None else [])

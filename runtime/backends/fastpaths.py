"""Opt-in fast paths for the PyTorch backend, each behind its own switch and all off by default.

They exist for CUDA, where their gain is measured side by side by ``guardedge bench gpu-check``
(bench/gpu_check.py); here is only the switch logic, which the CPU tests check (the same answers
on and off, and which calls each switch reroutes). No switch becomes a default before a GPU
measurement says it pays.

- ``vision_attention``: the attention implementation of the vision encoder ("eager" or "sdpa").
  transformers 4.57 already picks "sdpa" when it loads Mllama; "eager" is the reference the
  6,432-token attention is compared against. FlashAttention is not offered: the vision encoder
  passes a float mask (tiles of the aspect ratio's padding), which FlashAttention-2 cannot take.
- ``compile_vision``: ``torch.compile`` of the vision encoder's forward.
- ``compile_decode``: ``torch.compile`` of the text model, used only for decode steps (a few new
  tokens over a non-empty cache); the prefill, whose length changes with every batch, stays eager.

A static KV cache is not offered: Mllama's cross-attention layers cache the image's 6,404
keys per row while the self-attention layers grow, and transformers 4.57 marks Mllama as not
compilable with a static cache (``_can_compile_fullgraph = False``) for that reason.

    EngineOptions(fast_paths=FastPaths(vision_attention="sdpa", compile_decode=True))
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal

DECODE_WIDTH = 4  # widest decode step (runtime/backends/torch_backend.py _TorchSteps.max_chunk)


@dataclass(frozen=True)
class FastPaths:
    vision_attention: Literal["eager", "sdpa"] | None = None  # None: what transformers chose at load
    compile_vision: bool = False
    compile_decode: bool = False
    compile_backend: str = "inductor"  # torch.compile backend; the CPU tests use "eager"
    compile_mode: str | None = None  # torch.compile mode, e.g. "max-autotune-no-cudagraphs"

    @property
    def any(self) -> bool:
        return self.vision_attention is not None or self.compile_vision or self.compile_decode

    def describe(self) -> str:
        on = [f"vision_attention={self.vision_attention}"] if self.vision_attention else []
        on += [name for name in ("compile_vision", "compile_decode") if getattr(self, name)]
        return ", ".join(on) or "none"


def parse_fast_paths(text: str) -> FastPaths:
    """``"vision_attention=eager,compile_decode"`` (a CLI flag's value) as FastPaths; "" is none."""
    fields: dict = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, value = item.partition("=")
        if name in ("compile_vision", "compile_decode") and not value:
            fields[name] = True
        elif name in ("vision_attention", "compile_backend", "compile_mode") and value:
            fields[name] = value
        else:
            raise ValueError(f"unknown fast path {item!r}; use vision_attention=eager|sdpa, compile_vision, "
                             "compile_decode, compile_backend=NAME, compile_mode=MODE")
    if fields.get("vision_attention", "sdpa") not in ("eager", "sdpa"):
        raise ValueError(f"vision_attention must be eager or sdpa; got {fields['vision_attention']!r}")
    return FastPaths(**fields)


def apply_fast_paths(backend: object, paths: FastPaths) -> None:
    """Switch the backend's model to the requested paths; refuse backends they do not apply to."""
    if not paths.any:
        return
    from guardedge.runtime.backends.torch_backend import TorchBackend

    if not isinstance(backend, TorchBackend):
        raise ValueError(f"fast paths ({paths.describe()}) apply to the PyTorch backend only, "
                         f"not {getattr(backend, 'name', type(backend).__name__)!r}")
    model = backend.model
    arch, _, _ = backend.bound()
    vision = arch.torch_vision_encoder(model)
    if paths.vision_attention:
        set_vision_attention(vision, paths.vision_attention)
    if paths.compile_vision:
        vision.forward = _compile(vision.forward, paths)
    if paths.compile_decode:
        text = arch.torch_text_model(model)
        text.forward = decode_only(text.forward, _compile(text.forward, paths))


def set_vision_attention(vision, implementation: Literal["eager", "sdpa"]) -> None:
    """The vision encoder's layers read ``config._attn_implementation`` at every call."""
    if implementation not in ("eager", "sdpa"):
        raise ValueError(f"vision_attention must be 'eager' or 'sdpa'; got {implementation!r}")
    vision.config._attn_implementation = implementation


def _compile(fn: Callable, paths: FastPaths) -> Callable:
    import torch

    return torch.compile(fn, backend=paths.compile_backend, mode=paths.compile_mode, dynamic=None)


def is_decode_step(kwargs: dict) -> bool:
    """A decode step feeds at most DECODE_WIDTH tokens after tokens already in the cache."""
    ids, cache = kwargs.get("input_ids"), kwargs.get("past_key_values")
    return ids is not None and cache is not None and ids.shape[1] <= DECODE_WIDTH and cache.get_seq_length() > 0


def decode_only(eager: Callable, compiled: Callable) -> Callable:
    """``compiled`` for decode steps, ``eager`` for everything else (the prefill)."""

    def forward(*args, **kwargs):
        return (compiled if not args and is_decode_step(kwargs) else eager)(*args, **kwargs)

    # For tests and gpu-check: what a decode step calls (a function attribute, which mypy cannot declare).
    forward.compiled = compiled  # type: ignore[attr-defined]
    return forward

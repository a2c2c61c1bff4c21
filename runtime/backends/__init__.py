"""Backends behind one small protocol (load; prefill a batch; decode rows), chosen lazily.

Each backend module is imported only when chosen, so a missing extra (onnxruntime,
bitsandbytes) fails only for the user who asked for it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, Sequence

if TYPE_CHECKING:
    import torch

    from guardedge.runtime.architectures import Architecture
    from guardedge.runtime.decoding import Drafter, Until
    from guardedge.runtime.modeldir import ModelDir
    from guardedge.runtime.architectures import Batch


class Backend(Protocol):
    name: str  # "torch", "onnxruntime", ...

    @property
    def description(self) -> str:
        """One line for people."""
        ...

    @property
    def precision(self) -> str:
        """The weights' precision: float32, bfloat16, int8, ..."""
        ...

    @property
    def device_name(self) -> str:
        """The device type: cpu, cuda."""
        ...

    def memory_bytes(self) -> int:
        """Bytes the loaded model's weights occupy."""
        ...

    def prefill(self, batch: Batch, draft: Sequence[int] = ()) -> tuple[torch.Tensor, object]:
        """fp32 logits [B, vocab] for the next token after each row, plus state for decode.

        ``draft`` may be fed after every prompt in the same pass for decode to verify; a backend
        that cannot read logits there ignores it."""
        ...

    def decode(self, state: Any, rows: list[int], first: list[int], max_new: int | list[int], stop_ids: set[int],
               drafter: Drafter | None = None, until: Until | None = None) -> list[list[int]]:
        """Greedy token ids for ``rows`` of ``state`` (what this backend's prefill returned) (``first`` forced as the first token), stop token included;
        ``max_new`` bounds each row, ``until(row, tokens)`` ends a row whose answer is complete.

        ``drafter`` proposes format tokens a backend may verify in one pass (runtime/decoding.py);
        the result is greedy decoding's either way."""
        ...


def load_backend(model_dir: ModelDir, arch: Architecture, device: str | None, dtype: str | None) -> Backend:
    """The backend the directory asks for (its manifest), on ``device``, for architecture ``arch``."""
    if model_dir.backend == "onnxruntime":
        import importlib

        from guardedge.runtime.errors import ModelLoadError
        from guardedge.runtime.extras import require

        if not arch.onnx_backend:
            raise ModelLoadError(f"{model_dir.path}: no ONNX Runtime backend for the {arch.model_type} architecture yet")
        require("onnxruntime", purpose=f"the ONNX artifact {model_dir.path}")
        module, name = arch.onnx_backend.split(":")
        return getattr(importlib.import_module(module), name).load(model_dir, device=device, dtype=dtype, arch=arch)
    if model_dir.backend != "torch":
        from guardedge.runtime.errors import ModelLoadError

        raise ModelLoadError(f"{model_dir.path}: backend {model_dir.backend!r} in its manifest is not one this guardedge has")
    from guardedge.runtime.backends.torch_backend import TorchBackend

    components = (model_dir.manifest or {}).get("components", {})
    return TorchBackend.load(model_dir.path, device=device, dtype=dtype, arch=arch, head_rows=components.get("head_rows"))

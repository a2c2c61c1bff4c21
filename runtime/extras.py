"""Optional dependencies: one line that names the extra to install, never a raw traceback.

    require("onnxruntime", extra="cpu", purpose="an ONNX artifact")   # ModelLoadError if absent

A backend calls ``require`` before it imports an optional package, so a site that installed
``guardedge`` without the extra learns in one line which ``pip install 'guardedge[...]'`` fixes it.
"""

from __future__ import annotations

import importlib.util

from guardedge.runtime.errors import ModelLoadError

# Which extra brings each optional module (pyproject.toml [project.optional-dependencies]).
INSTALL = {
    "onnxruntime": "pip install 'guardedge[cpu]' (on a CUDA machine 'guardedge[gpu]')",
    "bitsandbytes": "pip install 'guardedge[bnb]'",
    "accelerate": "pip install 'guardedge[bnb]'",
}


def missing(*modules: str) -> list[str]:
    """The modules among ``modules`` that cannot be imported here (found without importing them)."""
    return [m for m in modules if importlib.util.find_spec(m) is None]


def require(*modules: str, purpose: str) -> None:
    """Raise ModelLoadError in one line if any of ``modules`` is not installed."""
    absent = missing(*modules)
    if not absent:
        return
    hint = " and ".join(dict.fromkeys(INSTALL.get(m, f"pip install {m}") for m in absent))
    raise ModelLoadError(f"{purpose} needs {', '.join(absent)}, which is not installed: {hint}")

"""Model names: aliases for the models guardedge builds itself, above model-directory resolution.

``demo`` (the Llama Guard 3 Vision demo guard) and ``demo-llavaguard`` (the LlavaGuard demo)
are assembled on first use by their builders, imported only when named; anything else is a
local directory (runtime/modeldir.py). Keeping the aliases here keeps modeldir free of the
demo's imports (which reach the engine).

    from guardedge.runtime.models import resolve_model
    model_dir = resolve_model("demo")
"""

from __future__ import annotations

import importlib
from pathlib import Path

from guardedge.runtime.modeldir import ModelDir, check, offline

# alias -> "module:function" returning the built directory (called with progress=...).
ALIASES: dict[str, str] = {
    "demo": "guardedge.runtime.demo.build:ensure_demo",
    "demo-llavaguard": "guardedge.runtime.demo.llavaguard.build:ensure_demo_llavaguard",
}


def resolve_model(model: str, progress: bool = True) -> ModelDir:
    """An alias's built directory, or the local directory ``model`` (checked either way)."""
    offline()
    if model in ALIASES:
        module, name = ALIASES[model].split(":")
        path = getattr(importlib.import_module(module), name)(progress=progress)
        return check(Path(path), model, progress)
    path = Path(model).expanduser()
    return check(path, path.name, progress)

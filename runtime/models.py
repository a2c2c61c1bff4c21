"""Model names: the demo guards' aliases (runtime/demos.py), above model-directory resolution.

``demo`` (the Llama Guard 3 Vision demo guard), ``demo-llavaguard`` and every other installed demo
are assembled on first use by their builders, imported only when named; anything else is a local
directory (runtime/modeldir.py).

    from guardedge.runtime.models import resolve_model
    model_dir = resolve_model("demo")
"""

from __future__ import annotations

from pathlib import Path

from guardedge.runtime.demos import demos
from guardedge.runtime.modeldir import ModelDir, check, offline


def aliases() -> tuple[str, ...]:
    """The model names that build a demo (every installed demo plug-in)."""
    return tuple(demos())


def resolve_model(model: str, progress: bool = True) -> ModelDir:
    """An alias's built directory, or the local directory ``model`` (checked either way)."""
    offline()
    demo = demos().get(model)
    if demo is not None:
        return check(Path(demo.build(progress=progress)), model, progress)
    path = Path(model).expanduser()
    return check(path, path.name, progress)

"""guardedge.runtime: the core library — guard formats, validation, the scoring engine, backends.

Importing it is cheap: torch, transformers, bitsandbytes and onnxruntime load only when a
backend or the demo guard needs them.

    from guardedge.runtime import load_engine
    engine = load_engine("demo")                      # or a local model directory
    [verdict] = engine.classify([engine.parse({"messages": [...]})])
"""

from __future__ import annotations

__version__ = "0.1.0"


def installed_version() -> str:
    """The installed distribution's version (what --version and annotate outputs record)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("guardedge")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return __version__


def __getattr__(name: str):
    # Lazy re-exports keep `import guardedge.runtime` free of heavy imports.
    if name in {"load_engine", "Engine", "EngineOptions"}:
        from guardedge.runtime import engine

        return getattr(engine, name)
    if name in {"parse_request", "RequestLimits"}:
        from guardedge.runtime import requests

        return getattr(requests, name)
    raise AttributeError(name)

"""Shared fixtures: the demo guard (built once per machine, cached) and its engine."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def demo_dir():
    from guardedge.runtime.demo.build import ensure_demo

    return ensure_demo(progress=False)


@pytest.fixture(scope="session")
def demo_engine(demo_dir):
    from guardedge.runtime.engine import EngineOptions, load_engine

    return load_engine(str(demo_dir), EngineOptions(max_batch_size=8, progress=False))


@pytest.fixture(scope="session")
def tokenizer(demo_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(demo_dir), local_files_only=True)


@pytest.fixture(scope="session")
def llava_tiny_dir(tmp_path_factory):
    """A tiny random-weight LLaVA-OneVision directory (tests/llava_tiny.py), the llavaguard family's by
    default, whose answers stop after one token (fast; off-format)."""
    import llava_tiny

    return llava_tiny.build(tmp_path_factory.mktemp("llava-tiny") / "model", answer_stop=True)

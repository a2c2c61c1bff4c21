"""A tiny random-weight ShieldGemma 2 directory for architecture tests (no training).

The demo's layout (runtime/demo/shieldgemma2/layout.py: the real Gemma 3 tokenizer, the
``Gemma3ImageProcessor`` and ``ShieldGemma2Processor`` files, the chat template) at toy sizes:
28-px images of 14-px patches (4 soft tokens), 3 text layers (sliding, full, sliding) whose window
(``sliding_window``) is short enough that prompts cross it. The projector, zero at init in
transformers, is randomised so that images change the numbers.
"""

from __future__ import annotations

from pathlib import Path

import pytest


def require_tokenizer() -> None:
    from guardedge.runtime.demo.shieldgemma2 import fetch

    if not fetch.installed():
        pytest.skip(f"the Gemma 3 tokenizer is not installed: run `{fetch.COMMAND}`")


def build(path: Path, sliding_window: int = 48, seed: int = 0) -> Path:
    import torch
    from transformers import ShieldGemma2ForImageClassification

    from guardedge.runtime.demo.shieldgemma2.layout import demo_config, save_model, write_layout
    from guardedge.runtime.demo.shieldgemma2.tokenizer import load_tokenizer

    torch.manual_seed(seed)
    model = ShieldGemma2ForImageClassification(demo_config(tiny=True, sliding_window=sliding_window)).eval()
    with torch.no_grad():
        projector = model.model.model.multi_modal_projector.mm_input_projection_weight
        projector.normal_(0.0, 0.5)
    save_model(model, path)
    write_layout(path, load_tokenizer(), tiny=True)
    return path

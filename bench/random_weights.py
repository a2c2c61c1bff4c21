"""Random weights at real widths, shared by the benches' random models (bench/fullsize.py for Mllama,
bench/realshape_llava.py for LLaVA-OneVision): a cheap init, an output layer steered so the first
answer token is the family's safe or unsafe one, and answers capped at a real verdict's decode work.
"""

from __future__ import annotations

import math


def randomize(model, seed: int) -> None:
    """Cheap in-place init: N(0, 0.02) for matrices and gates, 1 for norm weights, 0 for biases."""
    import torch

    generator = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.zero_()
            elif p.dim() == 1 and "norm" in name:
                p.fill_(1.0)
            else:
                p.normal_(0.0, 0.02, generator=generator)


def steer_head(weight, safe_id: int, unsafe_id: int) -> None:
    """Opposite ``safe``/``unsafe`` rows (logits about ±3 after the final RMSNorm), the rest ~0: the
    first token is one of the two and P(unsafe) stays well inside (0, 1)."""
    import torch

    hidden = weight.shape[1]
    with torch.no_grad():
        weight.mul_(1e-4 / (0.02 * math.sqrt(hidden)))
        direction = torch.randn(hidden, device=weight.device, dtype=torch.float32) * (3.0 / math.sqrt(hidden))
        weight[unsafe_id] = direction.to(weight.dtype)
        weight[safe_id] = (-direction).to(weight.dtype)


def one_code_answers(family):
    """The family with answers capped at the decode work of a real one-category answer.

    Random weights never write the format, so drafts are rejected and an uncapped decode runs to
    max_new_tokens (64 passes), which no real guard answer costs. A real "unsafe\nS<n><|eot_id|>"
    takes the prefill (with its draft) and one decode pass (runtime/decoding.py); capping the
    answer at three tokens gives a random model the same: the verdict token, the token read from
    the prefill's draft positions, and one decode pass.
    """
    import copy
    import dataclasses

    capped = copy.copy(family)
    capped.scoring = dataclasses.replace(family.scoring, max_new_tokens=3)
    return capped

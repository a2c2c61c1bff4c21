"""ShieldGemma 2's published transformers usage, for ``guardedge bench reference`` (bench/reference.py).

The google/shieldgemma-2-4b-it model card runs::

    model = ShieldGemma2ForImageClassification.from_pretrained(model_id).eval()
    processor = AutoProcessor.from_pretrained(model_id)
    model_inputs = processor(images=[image], return_tensors="pt")
    with torch.inference_mode():
        scores = model(**model_inputs)
    print(scores.probabilities)

This is that code, unchanged but for the model directory; a request's custom policies and
exclusions go through the processor's own arguments (``custom_policies``, ``policies``). One image x
the three default policies is three prompts in one padded batch, each run whole (the image through
the vision tower three times, logits over the whole vocabulary at every position). P(Yes) is
``probabilities[:, 0]`` (the class docstring's ``[:, 1]`` is P(No)). The model loads in its
default dtype (fp32), as the card does, on the engine's device; so does the engine on CPU, and
the report gives the largest difference between the two sides' P(Yes) over every policy of every
request.
"""

from __future__ import annotations

from guardedge.runtime.images import decode_image

REFERENCE = "snippet_fp32"
LABELS = {"snippet_fp32": "card ShieldGemma2ForImageClassification (fp32)"}


def load_snippet(model_dir: str, device: str = "cpu"):
    from transformers import AutoProcessor, ShieldGemma2ForImageClassification

    model = ShieldGemma2ForImageClassification.from_pretrained(model_dir, local_files_only=True).eval().to(device)
    return AutoProcessor.from_pretrained(model_dir, local_files_only=True), model


def snippet_scores(processor, model, image, policies: list[str], custom: dict | None) -> dict[str, float]:
    """The card's code path for one image: {policy: P(Yes)}."""
    import torch

    kwargs = {"custom_policies": custom} if custom else {}
    model_inputs = processor(images=[image], policies=policies, return_tensors="pt", **kwargs).to(model.device)
    with torch.inference_mode():
        scores = model(**model_inputs)
    return dict(zip(policies, scores.probabilities[:, 0].tolist()))


def cases() -> list[dict]:
    """The ShieldGemma 2 smoke requests: default policies, an excluded one, custom policies."""
    from guardedge.runtime.families import get_family

    return get_family("shieldgemma-2").smoke_requests()


def snippets(path: str, engine) -> dict:
    """name -> answer(case, request): the card's {policy: P(Yes)} for the request's policies."""
    from guardedge.bench.reference import card_device

    snippet = load_snippet(path, card_device(engine))

    def answer(case: dict, request) -> dict[str, float]:
        custom = dict(request.categories) if request.categories is not None else None
        return snippet_scores(*snippet, decode_image(request.image).image, list(engine.family.prompt_keys(request)), custom)

    return {"snippet_fp32": answer}


def verdict(answer: dict[str, float], request, engine) -> tuple[str, tuple[str, ...]]:
    """The card's scores read as the engine reads its own (threshold 0.5, the policies at or above it)."""
    flagged = tuple(key for key, p in answer.items() if p >= 0.5)
    return ("unsafe" if flagged else "safe"), flagged


def scores(answer: dict[str, float]) -> dict[str, float]:
    """P(Yes) per policy: compared with the engine's ``category_scores``."""
    return answer

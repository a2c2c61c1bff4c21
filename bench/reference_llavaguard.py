"""LlavaGuard's published transformers usage, for ``guardedge bench reference`` (bench/reference.py).

The LlavaGuard v1.2 ``-hf`` model card runs::

    model = LlavaOnevisionForConditionalGeneration.from_pretrained(MODEL)
    processor = AutoProcessor.from_pretrained(MODEL)
    conversation = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": policy}]}]
    text_prompt = processor.apply_chat_template(conversation, add_generation_prompt=True)
    inputs = processor(text=text_prompt, images=image, return_tensors="pt")
    output = model.generate(**inputs, max_new_tokens=200, ...)   # the full JSON: rating, category, rationale
    print(processor.decode(output[0], skip_special_tokens=True))

This is that code with two changes, both said here: decoding is greedy (``do_sample=False``,
one beam; the card samples with temperature 0.2 and 2 beams, which a classifier should not), and
the processor is built without its video part. ``AutoProcessor`` builds LLaVA-OneVision's video
processor, which needs torchvision; torchvision is not a dependency (no wheel loads beside our
torch pin), so :func:`load_processor` uses ``LlavaOnevisionProcessor`` with ``video_processor``
omitted (the directory's image processor, tokenizer, processor settings and chat template, as
AutoProcessor reads them). Images and text go through exactly the same code. The model loads
in its default dtype (fp32), as the card does, on the engine's device. The policy is the
family's text for the request (the default v1.2 policy, or the request's exclusions / custom
categories swapped in as the LlavaGuard repository builds them).
"""

from __future__ import annotations

from guardedge.runtime.images import decode_image

MAX_NEW_TOKENS = 200  # the card's
REFERENCE = "snippet_fp32"  # the speedups' reference: the card's code (its default dtype, fp32)
LABELS = {"snippet_fp32": "model card generate (fp32, greedy, full JSON)"}


def load_processor(model_dir: str):
    """``AutoProcessor.from_pretrained(model_dir)`` without the video processor (needs torchvision)."""
    import json
    from pathlib import Path

    from transformers import AutoImageProcessor, AutoTokenizer, LlavaOnevisionProcessor

    class ImageOnlyProcessor(LlavaOnevisionProcessor):
        attributes = ["image_processor", "tokenizer"]  # no video_processor: nothing to load or check

    settings = {k: v for k, v in _read_json(Path(model_dir) / "processor_config.json").items()
                if k in ("num_image_tokens", "vision_feature_select_strategy", "image_token", "video_token", "vision_aspect_ratio")}
    template = _chat_template(Path(model_dir))
    image_processor = AutoImageProcessor.from_pretrained(model_dir, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    return ImageOnlyProcessor(image_processor=image_processor, tokenizer=tokenizer, chat_template=template, **settings)


def _read_json(path) -> dict:
    import json

    return json.loads(path.read_text()) if path.is_file() else {}


def _chat_template(path) -> str | None:
    """The directory's chat template, where AutoProcessor looks: chat_template.jinja or .json."""
    if (path / "chat_template.jinja").is_file():
        return (path / "chat_template.jinja").read_text()
    return _read_json(path / "chat_template.json").get("chat_template")


def load_snippet(model_dir: str, device: str = "cpu"):
    """The card's processor and model (default dtype: fp32) on ``device``."""
    from transformers import LlavaOnevisionForConditionalGeneration

    model = LlavaOnevisionForConditionalGeneration.from_pretrained(model_dir, local_files_only=True).eval().to(device)
    return load_processor(model_dir), model


def snippet_answer(processor, model, policy: str, image) -> str:
    """The card's code path for one image and policy, greedy; returns the generated text."""
    conversation = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": policy}]}]
    text_prompt = processor.apply_chat_template(conversation, add_generation_prompt=True)
    inputs = processor(text=text_prompt, images=image, return_tensors="pt").to(model.device)
    prompt_len = inputs["input_ids"].shape[1]
    output = model.generate(**inputs, max_new_tokens=MAX_NEW_TOKENS, do_sample=False, num_beams=1,
                            pad_token_id=processor.tokenizer.pad_token_id or 0)
    return processor.decode(output[0, prompt_len:], skip_special_tokens=True)


def cases() -> list[dict]:
    """The LlavaGuard smoke requests (the demo samples and a custom policy) as verdict-only requests."""
    from guardedge.runtime.families import get_family

    return [{k: v for k, v in r.items() if k != "rationale"} for r in get_family("llavaguard").smoke_requests()]


def snippets(path: str, engine) -> dict:
    """name -> answer(case, request) for the published usage, read with the engine's family."""
    from guardedge.bench.reference import card_device

    snippet = load_snippet(path, card_device(engine))

    def answer(case: dict, request) -> str:
        return snippet_answer(*snippet, engine.family.policy_text(request), decode_image(request.image).image)

    return {"snippet_fp32": answer}

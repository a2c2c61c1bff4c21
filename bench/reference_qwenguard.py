"""QwenGuard's published transformers usage, for ``guardedge bench reference`` (bench/reference.py).

QwenGuard v1.2 is the llavaguard family on Qwen2.5-VL; its model card (AIML-TUDA/QwenGuard-v1.2-3B)
runs Qwen2.5-VL's standard code::

    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(MODEL, torch_dtype="auto", device_map="auto")
    processor = AutoProcessor.from_pretrained(MODEL)
    messages = [{"role": "user", "content": [{"type": "image", "image": URL}, {"type": "text", "text": policy_v1}]}]
    text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    image_inputs, video_inputs = process_vision_info(messages)
    inputs = processor(text=[text], images=image_inputs, videos=video_inputs, padding=True, return_tensors="pt")
    generated_ids = model.generate(**inputs, max_new_tokens=...)
    output_text = processor.batch_decode(generated_ids_trimmed, skip_special_tokens=True, ...)

(The card as read here was cut off after ``apply_chat_template``; the rest is Qwen2.5-VL's published
usage that it follows.) This is that code with these changes, each said here: decoding is greedy
without a repetition penalty (``do_sample=False``, one beam, ``repetition_penalty=1.0``: Qwen2.5-VL
checkpoints ship sampling settings a classifier should not use); ``max_new_tokens`` is 200, the
LlavaGuard card's budget for the full JSON with its rationale; the image goes to the processor as
the decoded PIL image (``qwen_vl_utils.process_vision_info``, not a dependency, would resize an RGB
image to the same smart_resize size with the same bicubic PIL call, after which the processor's
own resize is a copy); and the processor is built without its video part (``AutoProcessor`` needs
torchvision for it, which is not a dependency). The model loads in its stored dtype
("auto": bf16, as published, the speedups' reference) and in fp32 (the engine's CPU dtype).
"""

from __future__ import annotations

from guardedge.runtime.images import decode_image

MAX_NEW_TOKENS = 200  # the LlavaGuard card's (the full JSON with its rationale)
REFERENCE = "snippet_auto"  # the card's code as published: the checkpoint's own dtype
LABELS = {"snippet_auto": "card generate (stored dtype, greedy, JSON)",
          "snippet_fp32": "card generate (fp32, greedy, JSON)"}


def cases() -> list[dict]:
    """The family's requests, as the LlavaGuard side times them (smoke requests, verdict only)."""
    from guardedge.bench import reference_llavaguard

    return reference_llavaguard.cases()


def load_processor(model_dir: str):
    """``AutoProcessor.from_pretrained(model_dir)`` without the video processor (needs torchvision)."""
    import importlib.util

    from transformers import AutoProcessor, Qwen2_5_VLProcessor

    if importlib.util.find_spec("torchvision") is not None:
        return AutoProcessor.from_pretrained(model_dir)

    class ImageOnlyProcessor(Qwen2_5_VLProcessor):
        attributes = ["image_processor", "tokenizer"]  # no video_processor: nothing to load or check

        def __init__(self, image_processor=None, tokenizer=None, video_processor=None, chat_template=None, **kwargs):
            super().__init__(image_processor, tokenizer, None, chat_template=chat_template, **kwargs)

    return ImageOnlyProcessor.from_pretrained(model_dir)


def load_snippet(model_dir: str, dtype="auto", device: str = "cpu"):
    """The card's processor and model (``dtype`` "auto": the checkpoint's stored dtype) on ``device``."""
    from transformers import Qwen2_5_VLForConditionalGeneration

    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(model_dir, dtype=dtype, local_files_only=True)
    return load_processor(model_dir), model.eval().to(device)


def snippet_answer(processor, model, policy: str, image) -> str:
    """The card's code path for one image and policy, greedy; returns the generated text."""
    messages = [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": policy}]}]
    text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    inputs = processor(text=[text], images=[image], padding=True, return_tensors="pt").to(model.device)
    generated = model.generate(**inputs, max_new_tokens=MAX_NEW_TOKENS, do_sample=False, num_beams=1, repetition_penalty=1.0,
                               temperature=None, top_p=None, top_k=None)
    trimmed = [out[len(ids):] for ids, out in zip(inputs["input_ids"], generated)]
    return processor.batch_decode(trimmed, skip_special_tokens=True, clean_up_tokenization_spaces=False)[0]


def snippets(path: str, engine) -> dict:
    """name -> answer(case, request) for the published usage (as published, and in fp32), read with the engine's family."""
    import torch

    from guardedge.bench.reference import card_device

    device = card_device(engine)  # the card's device_map="auto": the GPU where there is one, as the engine
    loaded = {"snippet_auto": load_snippet(path, device=device),
              "snippet_fp32": load_snippet(path, torch.float32, device)}

    def side(snippet):
        return lambda case, request: snippet_answer(*snippet, engine.family.policy_text(request), decode_image(request.image).image)

    return {name: side(snippet) for name, snippet in loaded.items()}

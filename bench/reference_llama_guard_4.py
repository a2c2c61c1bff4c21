"""Llama Guard 4's published transformers usage, for ``guardedge bench reference`` (bench/reference.py).

The Llama-Guard-4-12B model card / HF blog runs::

    processor = AutoProcessor.from_pretrained(model_id)
    model = Llama4ForConditionalGeneration.from_pretrained(model_id, device_map="cuda", torch_dtype=torch.bfloat16)
    inputs = processor.apply_chat_template(messages, tokenize=True, add_generation_prompt=True,
                                           return_tensors="pt", return_dict=True, excluded_category_keys=[...])
    outputs = model.generate(**inputs, max_new_tokens=10, do_sample=False)
    response = processor.batch_decode(outputs[:, inputs["input_ids"].shape[-1]:], skip_special_tokens=True)[0]

This is that code with two changes, both forced and said here:

- ``attention_chunk_size``: the checkpoint's ``null`` makes transformers 4.57's Llama 4 forward
  fail (PurpleLlama #119); the snippet applies the published workaround,
  ``config.text_config.attention_chunk_size = 8192`` (no chunk boundary inside these prompts, so
  the numbers are those of no chunking, which is what ``null`` means).
- The image processor: ``AutoProcessor`` builds ``Llama4ImageProcessorFast``, which needs
  torchvision (not installable beside the project's torch). :class:`ExactImageProcessor` makes
  the same ``pixel_values`` bit for bit (runtime/architectures/llama4/pixels.py, checked against
  the fast processor by tests/test_llama4_pixels.py) inside transformers' own ``Llama4Processor``,
  which does everything else (chat template, placeholder expansion, tokenization).

The model loads on the engine's device (the card's ``device_map="cuda"`` where there is a GPU) in
the card's bfloat16 (the reference) and in fp32 (the engine's CPU dtype: what the dtype buys is
separated from what one-pass scoring buys). ``GROUPS`` splits the timings by images per request
(1 and 3). ``floors`` times the card's processor and one forward of its model (no answer), and
that forward alone with its inputs made beforehand: what any answer that runs the model once
pays, so the table shows the most a one-pass engine could gain over ``generate`` on these
requests.
"""

from __future__ import annotations

import functools

from guardedge.runtime.images import decode_image

MAX_NEW_TOKENS = 10  # the card's
REFERENCE = "snippet_bf16"
LABELS = {"snippet_bf16": "model card generate (bf16, as published)", "snippet_fp32": "model card generate (fp32)",
          "card_forward": "card processor + one forward, no answer (bf16)",
          "card_model_forward": "card one forward alone, inputs ready (bf16)"}
CHUNK_WORKAROUND = 8192
# Timing groups: name -> number of images in a case.
GROUPS = {"1 image": 1, "3 images": 3}


def image_count(case: dict) -> int:
    return sum(1 for m in case["messages"] for p in m["content"] if isinstance(p, dict) and p.get("type") == "image")


def exact_image_processor(model_dir: str):
    """An image processor (``BaseImageProcessor``) giving Llama4ImageProcessorFast's outputs without torchvision."""
    import json
    from pathlib import Path

    import torch
    from transformers.image_processing_utils import BaseImageProcessor, BatchFeature

    from guardedge.runtime.architectures.llama4 import pixels

    settings = json.loads((Path(model_dir) / "preprocessor_config.json").read_text())
    config = pixels.config_from_json(settings)

    class ExactImageProcessor(BaseImageProcessor):
        model_input_names = ["pixel_values"]

        def fetch_images(self, images):
            return images

        def __call__(self, images, **_):
            compact = [pixels.compact(image, config) for image in images]
            return BatchFeature({"pixel_values": pixels.pixel_values(compact, config),
                                 "aspect_ratios": torch.tensor([[c.rows, c.cols] for c in compact])})

    return ExactImageProcessor()


def load_processor(model_dir: str):
    """transformers' ``Llama4Processor`` over the directory's tokenizer, chat template and processor settings."""
    import json
    from pathlib import Path

    from transformers import AutoTokenizer, Llama4Processor

    path = Path(model_dir)
    settings = json.loads((path / "processor_config.json").read_text()) if (path / "processor_config.json").is_file() else {}
    settings = {k: v for k, v in settings.items() if k in ("patch_size", "pixel_shuffle_ratio")}
    template = json.loads((path / "chat_template.json").read_text())["chat_template"]
    # fix_mistral_regex=False: the tokenizer unchanged, as the engine loads it (transformers 4.57.3+ warns otherwise).
    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True, fix_mistral_regex=False)
    return Llama4Processor(image_processor=exact_image_processor(model_dir), tokenizer=tokenizer, chat_template=template, **settings)


@functools.lru_cache(maxsize=4)  # the card's bf16 model serves its generate and its one forward
def load_snippet(model_dir: str, dtype, device: str = "cpu"):
    from transformers import AutoConfig, Llama4ForConditionalGeneration

    config = AutoConfig.from_pretrained(model_dir, local_files_only=True)
    config.text_config.attention_chunk_size = CHUNK_WORKAROUND  # PurpleLlama #119's workaround
    model = Llama4ForConditionalGeneration.from_pretrained(model_dir, config=config, dtype=dtype, local_files_only=True)
    return load_processor(model_dir), model.eval().to(device)


def messages_for(request) -> list[dict]:
    """The request as the card's ``messages`` (images as PIL images, in their turns)."""
    return [{"role": m.role, "content": [{"type": "image", "image": decode_image(p.image).image} if p.type == "image"
                                         else {"type": "text", "text": p.text} for p in m.content]}
            for m in request.messages]


def card_inputs(processor, model, request) -> dict:
    """The card's ``apply_chat_template`` for ``request`` (tensors ready for its model)."""
    kwargs = {"excluded_category_keys": list(request.excluded_category_keys)}
    if request.categories is not None:
        kwargs["categories"] = dict(request.categories)
    inputs = processor.apply_chat_template(messages_for(request), tokenize=True, add_generation_prompt=True,
                                           return_tensors="pt", return_dict=True, **kwargs).to(model.device)
    if "pixel_values" in inputs:
        inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
    return inputs


def snippet_answer(processor, model, request) -> str:
    inputs = card_inputs(processor, model, request)
    outputs = model.generate(**inputs, max_new_tokens=MAX_NEW_TOKENS, do_sample=False, pad_token_id=processor.tokenizer.pad_token_id)
    # skip_special_tokens drops <|eot|>; the "\n\n" the model writes first is kept, as in the card.
    return processor.batch_decode(outputs[:, inputs["input_ids"].shape[-1]:], skip_special_tokens=True)[0]


def cases() -> list[dict]:
    """The Llama Guard 4 smoke requests with 1 or 3 images (the demo samples)."""
    from guardedge.runtime.families import get_family

    return [r for r in get_family("llama-guard-4").smoke_requests() if image_count(r) in GROUPS.values()]


def snippets(path: str, engine) -> dict:
    import torch

    from guardedge.bench.reference import card_device

    device = card_device(engine)  # the card's device_map="cuda" where there is a GPU, as the engine
    loaded = {"snippet_bf16": load_snippet(path, torch.bfloat16, device),
              "snippet_fp32": load_snippet(path, torch.float32, device)}

    def side(snippet):
        return lambda case, request: snippet_answer(*snippet, request)

    return {name: side(snippet) for name, snippet in loaded.items()}


def floors(path: str, engine) -> dict:
    """What bounds any answer that runs the card's model once: its processor and one forward of
    the prompt (bf16, logits of the last position only), no answer; and that forward alone, its
    inputs made before the timer. An engine that runs the same prefill with the same modules cannot
    beat the card's generate by more than generate / the second, even with free preprocessing."""
    import torch

    from guardedge.bench.reference import card_device

    processor, model = load_snippet(path, torch.bfloat16, card_device(engine))
    ready: dict[int, dict] = {}  # id(request) -> the card's inputs, made once, outside the timer

    def forward(case, request) -> None:
        with torch.inference_mode():
            model(**card_inputs(processor, model, request), logits_to_keep=1)

    def model_forward(case, request) -> None:
        inputs = ready.get(id(request))
        if inputs is None:
            inputs = ready[id(request)] = card_inputs(processor, model, request)
        with torch.inference_mode():
            model(**inputs, logits_to_keep=1)

    return {"card_forward": forward, "card_model_forward": model_forward}

"""Qwen2.5-VL (QwenGuard v1.2) against transformers' Qwen2_5_VLForConditionalGeneration, in fp32.

On the demo QwenGuard (the real architecture and tokenizer at tiny widths, random weights, the
real processor and chat template files): the verdict logits, the draft's logits at prefill and
the logits of KV-cached decode steps after it equal transformers' forward on the same text and
image to 1e-5 — each request alone and in a left-padded batch whose rows differ in text length
and image size (so in image tokens and 3-D positions). The ids equal what the model card's
processor makes of the chat template's text, and the image-token cost follows from the size alone.
"""

from __future__ import annotations

import base64
import io

import pytest
import torch

from guardedge.runtime.images import decode_image
from guardedge.runtime.architectures import architecture_class

pytestmark = pytest.mark.timeout(600)
ATOL = 1e-5
SIZES = [(96, 64), (64, 96), (300, 200), (20, 20)]  # (width, height): 6, 6, 64, 4 image tokens at the demo's budget
POLICIES = [{}, {"excluded_category_keys": ["O2", "O5"]}, {"categories": {"O1": "Gambling\nShould not:\n- Show dice."}},
            {"excluded_category_keys": ["O7"]}]


@pytest.fixture(scope="module")
def qwen_engine():
    from guardedge.runtime.engine import EngineOptions, load_engine

    return load_engine("demo-qwenguard", EngineOptions(progress=False, device="cpu", dtype="float32", max_batch_size=8))


@pytest.fixture(scope="module")
def processor(qwen_engine):
    from guardedge.runtime.demo.qwenguard.layout import load_processor

    return load_processor(qwen_engine.model_dir.path)


def _png(size, seed=0) -> str:
    import numpy as np
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def _requests(engine):
    return [engine.parse({"messages": [{"role": "user", "content": [{"type": "image", "data": _png(size, i)}]}], **policy})
            for i, (size, policy) in enumerate(zip(SIZES, POLICIES))]


def _reference(engine, processor, request, extra_ids=()):
    """transformers' forward on what the card's processor makes of the chat template's text and the
    image (the logits of the last prompt token and of every extra one: [1 + len(extra_ids), vocab])."""
    family, pre = engine.family, engine.pre
    text = family.render(request) + family.scoring.answer_prefix + pre.tokenizer.decode(pre.shared_ids)
    inputs = processor(text=[text], images=[decode_image(request.images[0]).image], return_tensors="pt")
    ids = torch.cat([inputs["input_ids"], torch.tensor([list(extra_ids)], dtype=torch.long)], dim=1)
    with torch.no_grad():
        logits = engine.backend.model(input_ids=ids, pixel_values=inputs["pixel_values"], image_grid_thw=inputs["image_grid_thw"],
                                      logits_to_keep=1 + len(extra_ids)).logits[0]
    return inputs["input_ids"][0].tolist(), logits


def test_registry_and_protocol():
    cls = architecture_class({"model_type": "qwen2_5_vl"})
    assert cls.transformers_class == "Qwen2_5_VLForConditionalGeneration" and cls.model_type == "qwen2_5_vl"
    assert cls.keep_16bit == ("visual", "lm_head") and cls.onnx_backend.endswith(":OnnxQwen25VLBackend")


def test_ids_are_the_card_processors_and_the_verdict_logits_match_alone_and_batched(qwen_engine, processor):
    engine = qwen_engine
    requests = _requests(engine)
    prepared = [engine.prepare(r) for r in requests]
    lengths = [len(p.encoded.input_ids) for p in prepared]
    assert len(set(lengths)) == len(lengths) and len({p.encoded.image_tokens for p in prepared}) == 3  # 6, 64, 4  # rows really differ
    together, _ = engine.backend.prefill(engine.pre.collate([p.encoded for p in prepared]))
    for i, (request, p) in enumerate(zip(requests, prepared)):
        ids, reference = _reference(engine, processor, request)
        assert p.encoded.input_ids == ids, i
        alone, _ = engine.backend.prefill(engine.pre.collate([p.encoded]))
        assert (alone[0] - reference[-1]).abs().max() < ATOL, i
        assert (together[i] - reference[-1]).abs().max() < ATOL, i


def test_drafted_prefill_and_decode_steps_match_transformers(qwen_engine, processor):
    """The draft fed at prefill and two KV-cached steps after it (the drafted step path: rows keep
    different numbers of positions, 3-D positions broadcast from text positions), in a mixed batch,
    against transformers on each row's whole sequence."""
    from guardedge.runtime.backends.torch_backend import _TorchSteps

    engine = qwen_engine
    requests = _requests(engine)
    draft = engine.prefill_draft
    assert len(draft) > 3
    batch = engine.pre.collate([engine.prepare(r).encoded for r in requests])
    _, state = engine.backend.prefill(batch, draft)
    rows = [0, 2, 3]
    steps = _TorchSteps(engine.backend, state, rows)
    kept_draft, kept_a = [len(draft), 2, 0], [3, 1, 2]  # as verification keeps them (0: the row's first token was not the draft's)
    steps.commit(kept_draft)
    block_a, block_b = [[11, 12, 13], [21, 22, 23], [31, 32, 33]], [[41, 42], [51, 52], [61, 62]]
    hidden_a = steps.step(block_a).hidden
    steps.commit(kept_a)
    hidden_b = steps.step(block_b).hidden
    head = engine.backend.head
    for k, row in enumerate(rows):
        fed = (*draft[: kept_draft[k]], *block_a[k][: kept_a[k]], *block_b[k])
        _, reference = _reference(engine, processor, requests[row], fed)
        at = reference.shape[0] - len(fed)  # the first fed token's position
        with torch.no_grad():
            got = torch.cat([head(state.draft_hidden[row, : kept_draft[k]]), head(hidden_a[k, : kept_a[k]]), head(hidden_b[k])])
        assert got.shape[0] == len(fed) and (got - reference[at:]).abs().max() < ATOL, row


def test_greedy_answers_equal_transformers_generate(qwen_engine, processor):
    """The engine's drafted greedy decode (batched) writes what generate() writes, token for token."""
    engine = qwen_engine
    requests = _requests(engine)[:3]
    batch = engine.pre.collate([engine.prepare(r).encoded for r in requests])
    logits, state = engine.backend.prefill(batch, engine.prefill_draft)
    first = logits.argmax(-1).tolist()
    decoded = engine.backend.decode(state, [0, 1, 2], first, 12, set(), engine.drafter)
    for request, tokens in zip(requests, decoded):
        family, pre = engine.family, engine.pre
        text = family.render(request) + family.scoring.answer_prefix + pre.tokenizer.decode(pre.shared_ids)
        inputs = processor(text=[text], images=[decode_image(request.images[0]).image], return_tensors="pt")
        out = engine.backend.model.generate(**inputs, max_new_tokens=12, do_sample=False, num_beams=1)
        assert len(tokens) == 12 and tokens == out[0, inputs["input_ids"].shape[1]:].tolist()


def test_vision_stage_equals_the_models_image_features(qwen_engine):
    engine = qwen_engine
    prepared = [engine.prepare(r) for r in _requests(engine)]
    batch = engine.pre.collate([p.encoded for p in prepared])
    features = engine.pre.arch.torch_vision(engine.backend.model, batch, torch.device("cpu"), torch.float32)
    model = engine.backend.model.model
    expected = torch.cat(model.get_image_features(batch.extra["pixel_values"], batch.extra["image_grid_thw"]))
    assert features.shape == (sum(p.encoded.image_tokens for p in prepared), 64) and torch.equal(features, expected)


def test_rows_without_images_and_with_two_images(qwen_engine):
    """The architecture beyond the family's one image: a text-only row and a two-image row in one
    batch with an image row, each equal to transformers alone."""
    engine = qwen_engine
    arch, tok = engine.pre.arch, engine.pre.tokenizer
    from PIL import Image

    images = [Image.new("RGB", size, colour) for size, colour in (((80, 60), (200, 10, 10)), ((50, 120), (10, 90, 200)))]
    vision = "<|vision_start|><|image_pad|><|vision_end|>"
    texts = ["<|im_start|>user\nhello there<|im_end|>\n<|im_start|>assistant\n",
             f"<|im_start|>user\n{vision}first{vision}second<|im_end|>\n<|im_start|>assistant\n",
             f"<|im_start|>user\n{vision}one<|im_end|>\n<|im_start|>assistant\n"]
    per_row = [[], images, images[1:]]
    from guardedge.runtime.architectures import Encoded

    items = []
    for text, imgs in zip(texts, per_row):
        encoded = [arch.encode_image(im) for im in imgs]
        ids, starts = arch.expand(tok.encode(text, add_special_tokens=False), encoded)
        items.append(Encoded(ids, encoded, starts, sum(e.tokens for e in encoded), [e.tokens for e in encoded]))
    together, _ = engine.backend.prefill(arch.collate(items))
    for i, (item, imgs) in enumerate(zip(items, per_row)):
        extra = {}
        if imgs:
            out = arch.image_processor(images=imgs, return_tensors="pt")
            extra = {"pixel_values": out["pixel_values"], "image_grid_thw": out["image_grid_thw"]}
        with torch.no_grad():
            reference = engine.backend.model(input_ids=torch.tensor([item.input_ids]), **extra).logits[0, -1]
        assert (together[i] - reference).abs().max() < ATOL, i


@pytest.mark.parametrize("max_pixels", [28 * 28 * 64, 12845056], ids=["demo", "real"])
def test_image_tokens_for_follows_from_the_size_alone(qwen_engine, max_pixels):
    """image_tokens_for(w, h) == the encoded image's cost == the processor's grid / 4, on many sizes
    (above 2 Mpx at the real budget, against the processor's own patch count: its pixels cost seconds)."""
    from PIL import Image
    from transformers import Qwen2VLImageProcessor

    engine = qwen_engine
    processor = Qwen2VLImageProcessor(min_pixels=3136, max_pixels=max_pixels)
    arch = type(engine.pre.arch)(None, engine.model_dir.config, engine.pre.tokenizer, image_processor=processor)
    sizes = [(1, 1), (2, 300), (300, 2), (27, 29), (28, 28), (55, 57), (96, 64), (640, 480), (1280, 720), (1920, 1080),
             (1024, 899), (3000, 4000), (5000, 3000), (7000, 35), (123, 4567), (9000, 9000)]
    for width, height in sizes:
        if width * height > 2_100_000 and max_pixels > 100_000:
            assert arch.image_tokens_for(width, height) == processor.get_number_of_image_patches(height, width, {}) // 4
            continue
        image = Image.new("RGB", (width, height), (90, 120, 30))
        grid = processor(images=[image], return_tensors="pt", input_data_format="channels_last")["image_grid_thw"][0]
        assert arch.image_tokens_for(width, height) == arch.image_tokens(arch.encode_image(image)) == int(grid.prod()) // 4, (width, height)


def test_an_aspect_ratio_beyond_200_is_a_request_error(qwen_engine):
    from guardedge.runtime.errors import InvalidRequest

    arch = qwen_engine.pre.arch
    with pytest.raises(InvalidRequest, match="at most 200 times"):
        arch.image_tokens_for(1, 201)
    # The request path refuses it earlier, from the header, for every architecture (the 200:1
    # image limit); the plug-in's own check stays for callers of the architecture alone.
    with pytest.raises(InvalidRequest, match="aspect ratio of 201.0:1"):
        qwen_engine.parse({"messages": [{"role": "user", "content": [{"type": "image", "data": _png((402, 2))}]}]})


def test_a_published_flat_config_reads_the_same():
    """QwenGuard's own config.json keeps the text fields at the top (transformers < 4.57's layout)."""
    from guardedge.runtime.architectures.qwen2_5_vl import _RopeIndex, Qwen25VL

    flat = {"model_type": "qwen2_5_vl", "max_position_embeddings": 128000, "image_token_id": 151655,
            "video_token_id": 151656, "vision_start_token_id": 151652, "vision_config": {"spatial_merge_size": 2,
            "tokens_per_second": 2}, "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]}}
    assert Qwen25VL.context_length(type("A", (), {"config": flat})()) == 128000
    ids = torch.tensor([[0, 0, 5, 151652, 151655, 151655, 151655, 151655, 151653, 7]])
    rope = _RopeIndex(flat)(ids, torch.tensor([[1, 4, 4]]), torch.tensor([[0, 0, 1, 1, 1, 1, 1, 1, 1, 1]]))
    assert rope[:, 0, 2:].tolist() == [[0, 1, 2, 2, 2, 2, 4, 5], [0, 1, 2, 2, 3, 3, 4, 5], [0, 1, 2, 3, 2, 3, 4, 5]]


def test_the_processor_fallback_collates_what_the_fast_path_does(qwen_engine):
    """fast_pixels=False (a processor configuration the fast path does not cover) runs the processor
    itself: the same tokens, patches, grids and positions."""
    from PIL import Image

    engine = qwen_engine
    fast = engine.pre.arch
    slow = type(fast)(None, engine.model_dir.config, engine.pre.tokenizer, image_processor=fast.image_processor, fast_pixels=False)
    assert slow.grid_config is None and fast.grid_config is not None
    vision = "<|vision_start|><|image_pad|><|vision_end|>"
    ids = engine.pre.tokenizer.encode(f"<|im_start|>user\n{vision}x<|im_end|>", add_special_tokens=False)
    batches = []
    for arch in (fast, slow):
        from guardedge.runtime.architectures import Encoded

        items = []
        for size in ((96, 64), (300, 200)):
            image = arch.encode_image(Image.new("RGB", size, (size[0] % 255, 40, 90)))
            expanded, starts = arch.expand(ids, [image])
            items.append(Encoded(expanded, [image], starts, image.tokens, [image.tokens]))
        batches.append(arch.collate(items))
    for key in ("pixel_values", "image_grid_thw", "rope_positions"):
        assert torch.equal(batches[0].extra[key], batches[1].extra[key]), key
    assert torch.equal(batches[0].input_ids, batches[1].input_ids)

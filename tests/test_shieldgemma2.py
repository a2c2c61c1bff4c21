"""ShieldGemma 2 on Gemma 3 (runtime/architectures/shieldgemma2/): the processor's ids and pixels, and
P(Yes) equal to transformers' ``ShieldGemma2ForImageClassification(...).probabilities[:, 0]`` in
fp32, each prompt alone and in mixed left-padded batches (policies of different lengths), on a
tiny random-weight model with the real Gemma 3 tokenizer and the real processor files
(tests/sg2_tiny.py). Its text layers alternate sliding (a 48-token window the prompts cross) and
full attention, so the masks' window and image block are both exercised."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
import torch

SIZES = [(40, 30), (30, 40), (1, 1), (1, 7), (3, 50), (50, 3), (28, 28), (97, 13), (640, 480), (17, 900)]


def _png(colour, size, mode="RGB") -> str:
    from PIL import Image

    rng = np.random.default_rng(sum(size))
    pixels = (np.array(colour, np.uint8) + rng.integers(0, 40, (size[1], size[0], 3))).astype(np.uint8)
    image = Image.fromarray(pixels).convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def _request(colour=(200, 20, 20), size=(40, 30), **policy) -> dict:
    return {"messages": [{"role": "user", "content": [{"type": "image", "data": _png(colour, size)}]}], **policy}


CUSTOM = {"weapons": "No Weapons: The image shall not show firearms or knives.",
          "gambling": "No Gambling: The image shall not show casino games, betting slips or slot machines, nor"
                      " advertise them in any way (e.g., banners, chips)."}


@pytest.fixture(scope="module")
def engine(sg2_tiny_dir):
    from guardedge.runtime.engine import EngineOptions, load_engine

    return load_engine(str(sg2_tiny_dir), EngineOptions(progress=False, max_batch_size=8))


@pytest.fixture(scope="module")
def reference(sg2_tiny_dir):
    """transformers' class and the directory's processor, as the model card runs them."""
    from transformers import ShieldGemma2ForImageClassification

    from guardedge.runtime.demo.shieldgemma2.layout import processor
    from guardedge.runtime.demo.shieldgemma2.tokenizer import load_tokenizer

    model = ShieldGemma2ForImageClassification.from_pretrained(str(sg2_tiny_dir), dtype=torch.float32).eval()
    return model, processor(load_tokenizer(), tiny=True)


def _reference_inputs(proc, obj: dict):
    from PIL import Image

    image = Image.open(io.BytesIO(base64.b64decode(obj["messages"][0]["content"][0]["data"]))).convert("RGB")
    categories = obj.get("categories")
    keys = [k for k in (categories or {"dangerous": 0, "sexual": 0, "violence": 0}) if k not in obj.get("excluded_category_keys", [])]
    kwargs = {"custom_policies": categories} if categories else {}
    return keys, proc(images=[image], policies=keys, return_tensors="pt", **kwargs)


def _reference_p_yes(model, proc, obj: dict) -> dict[str, float]:
    """Each policy's P(Yes), every prompt run alone (no padding)."""
    keys, inputs = _reference_inputs(proc, obj)
    out = {}
    for i, key in enumerate(keys):
        keep = inputs["attention_mask"][i].bool()
        row = {"input_ids": inputs["input_ids"][i : i + 1, keep], "attention_mask": inputs["attention_mask"][i : i + 1, keep],
               "token_type_ids": inputs["token_type_ids"][i : i + 1, keep], "pixel_values": inputs["pixel_values"][i : i + 1]}
        with torch.no_grad():
            out[key] = float(model(**row).probabilities[0, 0])
    return out


OBJS = [_request(), _request((20, 20, 200), (97, 13), categories=CUSTOM),
        _request((250, 120, 190), (640, 480), excluded_category_keys=["sexual"]),
        _request((0, 230, 230), (3, 50), categories={**CUSTOM, "violence": "No Violence: no blood."},
                 excluded_category_keys=["weapons"])]


def test_prompt_ids_equal_the_processors(engine, reference):
    _, proc = reference
    for obj in OBJS:
        keys, inputs = _reference_inputs(proc, obj)
        prepared = engine.prepare(engine.parse(obj))
        assert [k for k, _ in prepared.rows] == keys
        for i, (_, row) in enumerate(prepared.rows):
            assert row.input_ids == inputs["input_ids"][i][inputs["attention_mask"][i].bool()].tolist()


def test_p_yes_equals_transformers_alone_and_in_mixed_padded_batches(engine, reference):
    model, proc = reference
    want = [_reference_p_yes(model, proc, obj) for obj in OBJS]
    alone = [engine.classify([engine.parse(obj)])[0] for obj in OBJS]
    batched = engine.classify([engine.parse(obj) for obj in OBJS])  # one batch: four requests, ten prompts
    for w, a, b in zip(want, alone, batched):
        for verdict in (a, b):
            got = dict(verdict.category_scores)
            assert list(got) == list(w)
            for key in w:
                assert got[key] == pytest.approx(w[key], abs=1e-5), (key, got[key], w[key])
            assert verdict.unsafe_probability == pytest.approx(max(w.values()), abs=1e-5)


def test_transformers_own_padded_batch_agrees(engine, reference):
    """The processor's left-padded batch of one image x several policies, as the card runs it."""
    model, proc = reference
    obj = OBJS[1]
    _, inputs = _reference_inputs(proc, obj)
    assert not bool(inputs["attention_mask"].all())  # the policies differ in length: rows are padded
    with torch.no_grad():
        want = model(**inputs).probabilities[:, 0].tolist()
    got = [s for _, s in engine.classify([engine.parse(obj)])[0].category_scores]
    assert got == pytest.approx(want, abs=1e-5)


def test_the_image_block_and_the_window_matter(engine, reference):
    """The numbers above can fail: plain causal masks (the backend's default) give other P(Yes)."""
    from guardedge.runtime.architectures.forward import TorchForward

    model, proc = reference
    obj = OBJS[0]
    want = _reference_p_yes(model, proc, obj)
    arch = engine.backend.arch
    original = type(arch).torch_mask
    try:
        type(arch).torch_mask = TorchForward.torch_mask
        got = dict(engine.classify([engine.parse(obj)])[0].category_scores)
    finally:
        type(arch).torch_mask = original
    assert max(abs(got[k] - want[k]) for k in want) > 1e-4


def test_the_policies_share_the_image_pass(engine):
    from guardedge.runtime.preprocess import shared_prefix

    prepared = engine.prepare(engine.parse(_request(categories=CUSTOM)))
    rows = [e for _, e in prepared.rows]
    split = shared_prefix(rows)
    image_end = rows[0].image_positions[0] + rows[0].image_lengths[0]
    assert split is not None and image_end <= split < len(rows[0].input_ids) - 20
    text = engine.pre.tokenizer.decode(rows[0].input_ids[image_end:split])
    assert "<BEGIN_SAFETY_POLICY>\n" in text  # the instruction's head is shared, the policies part after it


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "P"])
def test_pixels_equal_the_processors_bit_for_bit(engine, mode):
    from PIL import Image

    arch = engine.backend.arch
    assert arch.square is not None  # the fast path is the one in use
    for size in SIZES:
        image = Image.open(io.BytesIO(base64.b64decode(_png((120, 60, 30), size, mode))))
        want = arch.image_processor(images=[image], return_tensors="pt", input_data_format="channels_last")["pixel_values"]
        encoded = arch.encode_image(image)
        got = arch.collate([_encoded(arch, encoded)]).extra["pixel_values"]
        assert torch.equal(got, want), (mode, size)


def _encoded(arch, image):
    from guardedge.runtime.architectures import Encoded

    ids = [2, arch.boi_id, 107]
    expanded, starts = arch.expand(ids, [image])
    return Encoded(expanded, [image], starts, arch.image_tokens(image), [arch.image_tokens(image)])


def test_image_tokens_for_a_size_equal_an_encoded_images(engine):
    from PIL import Image

    arch = engine.backend.arch
    for width, height in SIZES:
        image = Image.new("RGB", (width, height), (10, 20, 30))
        assert arch.image_tokens_for(width, height) == arch.image_tokens(arch.encode_image(image))
    e = _encoded(arch, arch.encode_image(Image.new("RGB", (8, 8))))
    span = e.input_ids[e.image_positions[0]:]
    assert span[0] == arch.boi_id and span[arch.soft_tokens + 1] == arch.eoi_id
    # The cost counted covers what the image adds to the prompt (its placeholder was one token).
    assert len(e.input_ids) - 3 + 1 <= arch.image_tokens_for(8, 8)


def test_a_directory_saved_by_save_pretrained_gets_its_head_tied(sg2_tiny_dir, tmp_path, reference):
    """save_pretrained drops the tied output layer and transformers 4.57 does not tie it again on load:
    the engine ties it (else the head is freshly random and P(Yes) is noise)."""
    import shutil

    from guardedge.runtime.engine import EngineOptions, load_engine

    model, proc = reference
    plain = tmp_path / "plain"
    shutil.copytree(sg2_tiny_dir, plain)
    (plain / "model.safetensors").unlink()
    from safetensors import safe_open
    from transformers import ShieldGemma2ForImageClassification

    tied = ShieldGemma2ForImageClassification(model.config).eval()  # tied at construction, as a trained model is
    tied.load_state_dict(model.state_dict())
    assert tied.model.lm_head.weight is tied.get_input_embeddings().weight
    tied.save_pretrained(plain, safe_serialization=True)

    with safe_open(str(plain / "model.safetensors"), framework="pt") as f:
        assert not any(k.endswith("lm_head.weight") for k in f.keys())  # what makes this case
    engine = load_engine(str(plain), EngineOptions(progress=False))
    got = dict(engine.classify([engine.parse(OBJS[0])])[0].category_scores)
    want = _reference_p_yes(model, proc, OBJS[0])
    assert max(abs(got[k] - want[k]) for k in want) < 1e-5

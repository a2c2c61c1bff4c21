"""The demo LlavaGuard: real tokenizer, real -hf layout and classes, packed weights, exact answers."""

from __future__ import annotations

import hashlib
import json

import pytest

from guardedge.runtime.demo.llavaguard import layout, policy
from guardedge.runtime.demo.llavaguard.build import PACK, ensure_demo_llavaguard
from guardedge.runtime.demo.llavaguard.data import answer_text, examples

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def lg_dir():
    return ensure_demo_llavaguard(progress=False)


@pytest.fixture(scope="module")
def lg_tokenizer(lg_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(lg_dir), local_files_only=True)


def test_tokenizer_is_qwen2s(lg_tokenizer):
    """Known Qwen2 ids, the -hf added tokens, and token-for-token agreement with tiktoken on the ranks."""
    import tiktoken
    from tiktoken.load import load_tiktoken_bpe

    from guardedge.runtime.demo.llavaguard.tokenizer import EXPECTED, MEDIA, SPECIALS, tiktoken_path

    for text, ids in EXPECTED.items():
        assert lg_tokenizer.encode(text, add_special_tokens=False) == ids, text
    for token, index in {**SPECIALS, **MEDIA}.items():
        assert lg_tokenizer.convert_tokens_to_ids(token) == index
    assert len(lg_tokenizer) == 151648 and lg_tokenizer.eos_token == "<|im_end|>" and lg_tokenizer.pad_token == "<|endoftext|>"
    pattern = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
    reference = tiktoken.Encoding("qwen", pat_str=pattern, mergeable_ranks=load_tiktoken_bpe(str(tiktoken_path())), special_tokens={})
    for text in (policy.policy_text(("O2", "O7")), "Grüße aus Köln: 12345 naïve  café\t— 東京タワー!", answer_text(examples("eval", 1)[0]["label"])):
        assert lg_tokenizer.encode(text, add_special_tokens=False) == reference.encode(text), text[:40]


def test_default_policy_is_the_published_one():
    assert hashlib.sha256(policy.policy_text().encode()).hexdigest() == policy.DEFAULT_POLICY_SHA256
    custom = policy.policy_text(("O3",))
    assert "Category O3 is declared as non-violating" in custom and "Category O2 is declared" not in custom
    assert policy.prompt_for().startswith("<|im_start|>user\n<image>\nProvide a safety assessment")
    with pytest.raises(ValueError, match="O10"):
        policy.policy_text(("O10",))


def test_directory_has_the_real_hf_layout(lg_dir):
    for name in ("config.json", "model.safetensors", "vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json",
                 "special_tokens_map.json", "added_tokens.json", "preprocessor_config.json", "processor_config.json",
                 "chat_template.json", "generation_config.json", "README.md"):
        assert (lg_dir / name).is_file(), name
    config = json.loads((lg_dir / "config.json").read_text())
    assert config["architectures"] == ["LlavaOnevisionForConditionalGeneration"] and config["model_type"] == "llava_onevision"
    assert (config["image_token_index"], config["video_token_index"]) == (151646, 151647)
    assert config["vision_feature_select_strategy"] == "full" and config["vision_feature_layer"] == -1
    assert config["vision_aspect_ratio"] == "anyres_max_9" and len(config["image_grid_pinpoints"]) == 36
    assert config["vision_config"]["model_type"] == "siglip_vision_model" and config["text_config"]["model_type"] == "qwen2"
    assert config["text_config"]["vocab_size"] == 152000 and config["torch_dtype" if "torch_dtype" in config else "dtype"] == "bfloat16"
    pre = json.loads((lg_dir / "preprocessor_config.json").read_text())
    assert pre["image_processor_type"] == "LlavaOnevisionImageProcessor" and pre["size"] == {"height": 28, "width": 28}
    proc = json.loads((lg_dir / "processor_config.json").read_text())
    assert proc["num_image_tokens"] == (pre["size"]["height"] // config["vision_config"]["patch_size"]) ** 2
    assert proc["vision_feature_select_strategy"] == "full" and proc["processor_class"] == "LlavaOnevisionProcessor"
    generation = json.loads((lg_dir / "generation_config.json").read_text())
    assert generation["eos_token_id"] == 151645 and generation["do_sample"] is False


def test_loads_offline_with_the_real_classes_and_renders_the_hf_prompt(lg_dir):
    from transformers import LlavaOnevisionForConditionalGeneration, LlavaOnevisionProcessor

    proc = layout.load_processor(lg_dir)
    assert isinstance(proc, LlavaOnevisionProcessor)
    messages = [{"role": "user", "content": [{"type": "text", "text": policy.policy_text()}, {"type": "image"}]}]
    assert proc.apply_chat_template(messages, add_generation_prompt=True) == policy.prompt_for()
    model = LlavaOnevisionForConditionalGeneration.from_pretrained(lg_dir, local_files_only=True)
    assert model.lm_head.weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()  # tied, as the 0.5B


def test_pack_reassembles_to_the_same_digest(lg_dir, tmp_path):
    """Directory weights → pack again → the committed pack's tensors and metadata, exactly."""
    from transformers import LlavaOnevisionForConditionalGeneration

    from guardedge.runtime.demo.llavaguard.build import SEED
    from guardedge.runtime.demo.llavaguard.pack import pack, pack_digest

    model = LlavaOnevisionForConditionalGeneration.from_pretrained(lg_dir, local_files_only=True)
    rows = pack(model, SEED, tmp_path / "again.safetensors")
    assert 0 < rows < 5000
    assert pack_digest(tmp_path / "again.safetensors") == pack_digest(PACK)
    assert PACK.stat().st_size < 8 * 2**20


def test_held_out_answers_are_exact_json_with_the_right_rating(lg_dir):
    from transformers import LlavaOnevisionForConditionalGeneration

    from guardedge.runtime.demo.llavaguard.metrics import generate, parse

    model = LlavaOnevisionForConditionalGeneration.from_pretrained(lg_dir, dtype="float32").eval()
    held_out = [ex for ex in examples("eval", 40) if ex["kind"] == "default"][:8]
    texts = generate(model, layout.load_processor(lg_dir), held_out, batch_size=8, progress=False)
    parsed = [parse(t) for t in texts]
    assert all(p is not None and t == json.dumps(p, indent=4) for p, t in zip(parsed, texts)), texts
    right = sum(p["rating"] == ex["label"]["rating"] for p, ex in zip(parsed, held_out))
    assert right >= 7, list(zip(texts, [ex["label"] for ex in held_out]))


@pytest.fixture(scope="module")
def lg_engine(lg_dir):
    from guardedge.runtime.engine import EngineOptions, load_engine

    return load_engine(str(lg_dir), EngineOptions(progress=False))


def _request(image, excluded=()) -> dict:
    import base64
    import io

    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return {"messages": [{"role": "user", "content": [{"type": "image", "data": data}]}], "excluded_category_keys": list(excluded)}


def _everyday_looking():
    """Everyday-looking pictures drawn here, independently of data.py: dark, red-toned, skin-toned, documents."""
    import numpy as np
    from PIL import Image, ImageDraw, ImageFilter, ImageFont

    rng = np.random.default_rng(7)

    def textured(base, spread, size=(160, 120), blur=2.0):
        noise = rng.normal(0, 1, (size[1] // 4, size[0] // 4, 3))
        field = np.asarray(Image.fromarray(np.uint8(np.clip(128 + 60 * noise, 0, 255))).resize(size, Image.BICUBIC), dtype=float)
        arr = np.array(base, dtype=float) + (field - 128) / 60 * spread
        return Image.fromarray(np.uint8(np.clip(arr, 0, 255))).filter(ImageFilter.GaussianBlur(blur))

    def document(paper, ink, size=(150, 200)):
        img = Image.new("RGB", size, paper)
        draw, font = ImageDraw.Draw(img), ImageFont.load_default(size=11)
        for i, line in enumerate(["Dear Sam,", "thanks for the photos from", "the trip. The weather was", "great and we saw the lake.",
                                  "See you on Sunday at noon,", "hello there and all the best", "Alex"] * 2):
            draw.text((8, 6 + 13 * i), line, fill=ink, font=font)
        return img

    night = textured((25, 22, 30), 25)  # a dark night shot
    sunset = textured((190, 50, 35), 45)  # red-toned
    skin = textured((215, 160, 130), 30)  # a close-up of skin
    letter = document((250, 250, 248), (20, 20, 20))
    dark_mode = document((30, 30, 38), (220, 220, 220))
    return {"night": night, "red sunset": sunset, "skin close-up": skin, "letter": letter, "dark-mode note": dark_mode}


EVERYDAY_LOOKING = ("night", "red sunset", "skin close-up", "letter", "dark-mode note")
POLICIES = {"default": (), "O1-O3 excluded": ("O1", "O2", "O3")}
# Measured on the committed v2 and v3 packs: this red-toned picture (hazard_share 0.002, harmless by the
# data's rule) is rated Unsafe O2 under the default policy. Strict, so the test says when a retrain fixes it.
KNOWN_UNSAFE = {("red sunset", "default")}


@pytest.mark.parametrize("name,policy", [
    pytest.param(n, p, id=f"{n}-{p}", marks=[pytest.mark.xfail(strict=True, reason="v2 and v3 rate it Unsafe O2 (MODEL_CARD.md)")]
                 if (n, p) in KNOWN_UNSAFE else [])
    for n in EVERYDAY_LOOKING for p in POLICIES])
def test_everyday_looking_images_are_safe_through_the_engine(lg_engine, name, policy):
    """Dark, red- and skin-toned pictures and documents are Safe under the default policy and with exclusions."""
    image = _everyday_looking()[name]
    verdict = lg_engine.classify([lg_engine.parse(_request(image, POLICIES[policy]))])[0]
    assert verdict.verdict == "safe", verdict.raw_output


def test_exclusion_makes_only_its_own_category_safe(lg_engine):
    """Under a policy excluding O3: O3 content is Safe (and still named), O2 content stays Unsafe O2."""
    from guardedge.runtime.demo.llavaguard.data import HAZARD_COLOURS, Image
    from guardedge.runtime.demo.llavaguard.policy import header

    pairs = [(Image(HAZARD_COLOURS["O3"], (80, 80), seed), Image(HAZARD_COLOURS["O2"], (128, 72), seed + 1)) for seed in (11, 23, 37)]
    requests = [lg_engine.parse(_request(img.render(), ("O3",))) for pair in pairs for img in pair]
    verdicts = lg_engine.classify(requests)
    for excluded_v, other_v in zip(verdicts[::2], verdicts[1::2]):
        assert excluded_v.verdict == "safe" and header("O3") in excluded_v.raw_output, excluded_v.raw_output
        assert other_v.verdict == "unsafe" and other_v.categories == ("O2",), other_v.raw_output


# -- custom policies (v3, docs/decisions/0010) -------------------------------------------------

def _held_out_policy(names_codes: list[tuple[str, str]]) -> dict:
    """A custom policy with held-out names (data.HELD_OUT_NAMES) and the held-out guideline wording."""
    from guardedge.runtime.demo.llavaguard.data import HELD_OUT_NAMES

    assert all(name in HELD_OUT_NAMES for _, name in names_codes)
    return {code: f"{name}\nMust not:\n- Depict or promote {name.lower()}.\nMay:\n- Discuss the risks of {name.lower()}."
            for code, name in names_codes}


CUSTOM = [("O6", "Gambling"), ("O2", "Fireworks"), ("O9", "Loot Boxes")]  # shuffled order, three of nine codes


def test_custom_policy_smoke_request_is_well_formed(lg_engine):
    """The smoke request with a custom policy (Gambling as O1) gets a parseable verdict (v2 wrote prose)."""
    from guardedge.runtime.demo.llavaguard_samples import smoke_requests

    request = next(r for r in smoke_requests() if r["request_id"] == "custom-policy")
    verdict = lg_engine.classify([lg_engine.parse(request)])[0]
    assert verdict.verdict != "unparseable", verdict.raw_output
    assert verdict.verdict == "safe", verdict.raw_output  # a flat blue far from every hazard colour


# Measured on the committed v3 pack: the model has not learnt to copy a custom name from the prompt
# (held-out custom_listed_exact 0.0, MODEL_CARD.md); it writes a name of its own, which the parser
# rejects. Strict, so the test says when a retrain learns it.
@pytest.mark.xfail(strict=True, reason="v3 does not copy custom category names (MODEL_CARD.md, limits)")
def test_custom_policy_hazard_of_a_listed_code_is_unsafe_with_that_code(lg_engine):
    """A hazard of a listed code is Unsafe with that code, and the answer copies the held-out name."""
    from guardedge.runtime.demo.llavaguard.data import HAZARD_COLOURS, Image

    categories = _held_out_policy(CUSTOM)
    cases = [(code, name, Image(HAZARD_COLOURS[code], size, seed)) for (code, name), size, seed in
             zip(CUSTOM, [(80, 80), (128, 72), (72, 128)], (5, 17, 29))]
    requests = [lg_engine.parse({**_request(img.render()), "categories": categories}) for _, _, img in cases]
    for (code, name, _), verdict in zip(cases, lg_engine.classify(requests)):
        assert verdict.verdict == "unsafe" and verdict.categories == (code,), verdict.raw_output
        assert f'"category": "{code}: {name}"' in verdict.raw_output, verdict.raw_output


# Measured on the committed v3 pack: a hazard of a code the custom policy does not list is still
# answered Unsafe with its code (held-out custom_unlisted_safe 0.05), which the parser rejects.
@pytest.mark.xfail(strict=True, reason="v3 rates unlisted-code hazards Unsafe with their code (MODEL_CARD.md, limits)")
def test_custom_policy_hazard_of_an_unlisted_code_is_safe(lg_engine):
    """O3 and O7 hazards are not in the custom policy: Safe, NA."""
    from guardedge.runtime.demo.llavaguard.data import HAZARD_COLOURS, Image

    categories = _held_out_policy(CUSTOM)
    images = [Image(HAZARD_COLOURS["O3"], (80, 80), 41), Image(HAZARD_COLOURS["O7"], (150, 150), 43)]
    verdicts = lg_engine.classify([lg_engine.parse({**_request(i.render()), "categories": categories}) for i in images])
    for verdict in verdicts:
        assert verdict.verdict == "safe", verdict.raw_output


@pytest.mark.parametrize("name", [
    pytest.param(n, marks=[pytest.mark.xfail(strict=True, reason="the known red sunset (KNOWN_UNSAFE): v3 starts Unsafe O2 here, then no custom name")]
                 if n == "red sunset" else []) for n in EVERYDAY_LOOKING])
def test_everyday_looking_images_are_safe_under_a_custom_policy(lg_engine, name):
    """Everyday-looking pictures are Safe under a held-out custom policy (O2 listed as Fireworks)."""
    image = _everyday_looking()[name]
    verdict = lg_engine.classify([lg_engine.parse({**_request(image), "categories": _held_out_policy(CUSTOM)})])[0]
    assert verdict.verdict == "safe", verdict.raw_output


def test_custom_policy_data_uses_disjoint_names():
    """Training names are built from TRAIN_WORDS; no held-out name's word is (or is part of) one of them."""
    import random

    from guardedge.runtime.demo.llavaguard.data import HELD_OUT_NAMES, TRAIN_WORDS, custom_policy

    held = {w.lower().strip(",") for n in HELD_OUT_NAMES for w in n.split()} - {"and", "or"}
    assert not [t for t in TRAIN_WORDS for h in held if h in t or t in h]
    rng = random.Random(0)
    train_names = {text.split("\n")[0] for _ in range(300) for _, text in custom_policy(rng, "train")}
    assert not train_names & set(HELD_OUT_NAMES)
    assert all(text.split("\n")[0] in HELD_OUT_NAMES for _, text in custom_policy(rng, "eval", 9))

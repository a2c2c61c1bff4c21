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

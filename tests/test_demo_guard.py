"""The demo guard: real layout and ids, packed weights, held-out quality, disjoint data splits."""

from __future__ import annotations

import json

from guardedge.runtime.demo import data
from guardedge.runtime.demo.build import PACK
from guardedge.runtime.demo.metrics import TARGETS, binary_scores

REAL_LAYOUT = ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
               "special_tokens_map.json", "preprocessor_config.json", "chat_template.json",
               "generation_config.json", "README.md"]


def test_directory_has_the_real_repository_files(demo_dir):
    for name in REAL_LAYOUT:
        assert (demo_dir / name).is_file(), name
    config = json.loads((demo_dir / "config.json").read_text())
    assert config["architectures"] == ["MllamaForConditionalGeneration"]
    assert config["image_token_index"] == 128256
    assert config["text_config"]["vocab_size"] == 128256
    assert "not a moderation model" in (demo_dir / "README.md").read_text().lower()


def test_held_out_metrics_meet_the_targets(demo_dir):
    """Measured at assembly time through the engine on 400 held-out examples."""
    metrics = json.loads((demo_dir / "metrics.json").read_text())
    for key, target in TARGETS.items():
        assert metrics[key] >= target, (key, metrics[key], target)
    # Unparseable answers are wrong answers (counted in the scores above); off-format text is rarer.
    assert metrics["unparseable"] <= 0.03 * metrics["n"]
    assert metrics["unparseable"] - metrics["unparseable_outside_policy"] <= 0.01 * metrics["n"]


def test_committed_pack_is_small_and_unpacks_deterministically():
    import torch
    from transformers import MllamaForConditionalGeneration

    from guardedge.runtime.demo.build import demo_config
    from guardedge.runtime.demo.weights import unpack

    assert PACK.stat().st_size <= 10 * 1024 * 1024
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in MllamaForConditionalGeneration(demo_config()).state_dict().items()}
    a, b = unpack(PACK, shapes), unpack(PACK, shapes)
    assert a.keys() == shapes.keys()
    assert all(torch.equal(a[k], b[k]) and a[k].shape == shapes[k] for k in a)


def _topical_texts(examples) -> set[str]:
    """Checked-message sentences that carry a topic (fixed sentences like refusals are shared)."""
    fixed = set(data.IMAGE_PROMPTS) | {t for t in data.REFUSE_TEMPLATES if "{t}" not in t}
    texts = {p["text"] for ex in examples for p in ex["messages"][-1]["content"] if p["type"] == "text"}
    return texts - fixed


def test_train_and_held_out_sentences_are_disjoint():
    held_out = _topical_texts(data.examples("eval", 400))
    assert len(held_out) > 100
    assert not held_out & _topical_texts(data.examples("train", 3000))


def test_generator_is_deterministic_and_covers_every_case():
    a, b = data.examples("eval", 300), data.examples("eval", 300)
    assert json.dumps(a, default=str) == json.dumps(b, default=str)
    kinds = {ex["kind"] for ex in a}
    assert kinds == {"default", "excluded", "custom", "image"}
    cats = {c for ex in data.examples("train", 2000) for c in ex["label"]["categories"]}
    assert {f"S{i}" for i in range(1, 14)} <= cats
    assert {ex["task"] for ex in a} == {"prompt", "response"}


def test_binary_scores_known_answer():
    s = binary_scores([True, True, False, False, True], [True, False, True, False, True])
    assert (s["precision"], s["recall"], s["fpr"]) == (2 / 3, 2 / 3, 0.5)
    assert abs(s["f1"] - 2 / 3) < 1e-12

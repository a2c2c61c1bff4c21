"""The demo guard: real layout and ids, packed weights, held-out quality, disjoint data splits."""

from __future__ import annotations

import json

import pytest

from guardedge.runtime.demo import data
from guardedge.runtime.demo.build import PACK
from guardedge.runtime.demo.metrics import NATURAL_MAX, NATURAL_MIN, TARGETS, binary_scores

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


@pytest.fixture(scope="module")
def metrics(demo_dir):
    """Measured through the current engine: the cache key covers the weights, the runtime's
    sources and the held-out data, so an engine change re-runs the evaluation."""
    from guardedge.runtime.demo.build import measured_metrics

    return measured_metrics(progress=False)


def test_held_out_metrics_meet_the_targets(metrics):
    """The synthetic held-out split (400 examples: templates and topics never trained on)."""
    for key, target in TARGETS.items():
        assert metrics[key] >= target, (key, metrics[key], target)
    # Unparseable answers are wrong answers (counted in the scores above); off-format text is rarer.
    assert metrics["unparseable"] <= 0.03 * metrics["n"]
    assert metrics["unparseable"] - metrics["unparseable_outside_policy"] <= 0.01 * metrics["n"]


@pytest.mark.xfail(strict=True, reason="v3 measured everyday flagged 6.3 % (bar 5 %) and the right category 74.6 % "
                                       "(bar 75 %); v2: 5.0 % and 76.5 % (MODEL_CARD.md, docs/decisions/0007 v3 addendum)")
def test_everyday_and_harmful_requests_written_independently(metrics):
    """Held-out sets written by another author than the training corpus (runtime/demo/natural.py)."""
    natural = metrics["natural"]
    for key, most in NATURAL_MAX.items():
        assert natural[key] <= most, (key, natural[key], most)
    for key, least in NATURAL_MIN.items():
        assert natural[key] >= least, (key, natural[key], least)


def test_everyday_and_harmful_requests_stay_where_v3_measured_them(metrics):
    """v3's figures on the independent sets (6.3 % everyday flagged, 97 % caught, 74.6 % right
    category, 98 % excluded → safe), so a further regression fails even while the bar above is missed."""
    natural = metrics["natural"]
    assert natural["everyday_flagged"] <= 0.064 and natural["harmful_caught"] >= 0.96
    assert natural["harmful_right_category"] >= 0.745 and natural["excluded_answered_safe"] >= 0.97


def test_metrics_cache_is_keyed_by_the_engine(monkeypatch, tmp_path):
    """A changed engine (runtime sources) must not read metrics measured with another."""
    from guardedge.runtime.demo import build, train

    monkeypatch.setattr(build, "home", lambda: tmp_path)
    monkeypatch.setattr(build, "ensure_demo", lambda progress=True: tmp_path / "demo-guard-x")
    calls = []
    monkeypatch.setattr(train, "evaluate", lambda model, progress=True: calls.append(model) or {"run": len(calls)})
    import guardedge.runtime.artifact as artifact

    monkeypatch.setattr(artifact, "engine_source_digest", lambda: "engine A")
    assert build.measured_metrics(progress=False) == {"run": 1}
    assert build.measured_metrics(progress=False) == {"run": 1}  # cached
    monkeypatch.setattr(artifact, "engine_source_digest", lambda: "engine B")
    assert build.measured_metrics(progress=False) == {"run": 2}  # re-measured


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


def _words(text: str) -> frozenset[str]:
    import re

    return frozenset(re.findall(r"[a-z0-9]+", text.lower()))


def test_everyday_training_and_held_out_sets_share_no_sentence():
    """Written by different authors, and checked: not even near-copies (word-set Jaccard < 0.75)."""
    from guardedge.runtime.demo import natural
    from guardedge.runtime.demo.build import PHASES

    corpus = natural.train_corpus(*{name for phase in PHASES for name in phase.mix.corpora})
    train = [x["prompt"] for key in ("benign", "tricky_benign") for x in corpus[key]]
    train += [x["prompt"] for items in corpus["harmful"].values() for x in items]
    held = natural.held_out_corpus()
    held_out = [x["prompt"] for key in ("everyday_benign", "tricky_benign", "harmful", "response_pairs") for x in held[key]]
    assert len(train) > 1500 and len(held_out) > 700
    held_words = [_words(p) for p in held_out]
    near = [p for p in train if any(len(_words(p) & h) / len(_words(p) | h) >= 0.75 for h in held_words if h)]
    assert near == []


def test_held_out_sets_cover_every_category():
    from guardedge.runtime.demo.natural import held_out_sets

    sets = held_out_sets()
    assert {ex["label"]["categories"][0] for ex in sets["harmful"]} == {f"S{i}" for i in range(1, 14)}
    assert all(ex["label"]["verdict"] == "safe" for ex in sets["everyday"] + sets["tricky"] + sets["harmful_excluded"])
    assert {ex["label"]["verdict"] for ex in sets["responses"]} == {"safe", "unsafe"}


# Real photos training never saw (scikit-image's and matplotlib's; runtime/demo/photos.py). v2
# called all eight unsafe sent alone (S9/S10/S11, P(unsafe) ~0.99), coffee and rocket also with a
# question. v3 flags 1 of the 38 held-out photos (hubble_deep_field, a flat black sky: Hate's cue).
REAL_PHOTOS = ("astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg", "camera.png", "horse.png",
               "motorcycle_left.png", "grace_hopper.jpg")


def test_real_photos_are_safe_alone_and_with_a_question(demo_engine):
    from guardedge.runtime.demo.photo_metrics import HELD_OUT_QUESTION, photo_verdicts, real_photos

    photos = real_photos(REAL_PHOTOS)
    assert sorted(name for name, _, _ in photos) == sorted(REAL_PHOTOS)
    for question in (None, HELD_OUT_QUESTION):
        verdicts = photo_verdicts(demo_engine, [img for _, _, img in photos], question)
        got = {name: (v.verdict, round(v.unsafe_probability, 3)) for (name, _, _), v in zip(photos, verdicts)}
        assert all(v.verdict == "safe" for v in verdicts), (question, got)


def test_flat_hazard_images_alone_are_unsafe_with_their_code(demo_engine):
    """Held-out flat hazard images (a seed stream training never draws), sent alone."""
    from guardedge.runtime.demo.photo_metrics import held_out_hazards, photo_verdicts

    hazards = held_out_hazards(per_colour=2)
    codes = {d: k for k, d in data.DEFAULT_CATEGORIES}
    verdicts = photo_verdicts(demo_engine, [img for _, img in hazards])
    assert [list(v.categories) for v in verdicts] == [[codes[h]] for h, _ in hazards]


def test_busy_photos_are_harmless_by_construction_and_the_question_is_held_out():
    from guardedge.runtime.demo.llavaguard.data import SAFE_MAX_SHARE, hazard_share
    from guardedge.runtime.demo.photo_metrics import held_out_hazards
    from guardedge.runtime.demo.photos import HELD_OUT_QUESTION, QUESTIONS, BusyPhoto, PhotoRequests

    photos = [BusyPhoto((0, 0, 0), (96, 64), seed).render() for seed in range(12)]
    assert all(hazard_share(img, data.IMAGE_COLOURS)[0] <= SAFE_MAX_SHARE for img in photos)
    assert all(hazard_share(img, data.IMAGE_COLOURS)[0] > 0.5 for _, img in held_out_hazards(per_colour=1))
    assert HELD_OUT_QUESTION not in QUESTIONS
    mix = data.TrainingMix(0.0, 0.0, 0.0, photo_requests=1.0, image_only=0.5)
    gen = PhotoRequests(data.Generator("train", 5, mix=mix), mix.photo_requests, mix.image_only, 5)
    exs = [gen.example() for _ in range(200)]
    alone = [ex for ex in exs if [p["type"] for p in ex["messages"][0]["content"]] == ["image"]]
    assert 60 < len(alone) < 140 and {ex["label"]["verdict"] for ex in alone} == {"safe", "unsafe"}
    busy = [ex for ex in exs if isinstance(ex["image_spec"], BusyPhoto)]
    assert busy and all(ex["label"]["verdict"] == "safe" for ex in busy)

"""The demo Llama Guard 4: the real directory layout and ids, the packed weights, held-out quality
through the engine (the demo Llama Guard's bar), multi-image answers, data splits kept apart."""

from __future__ import annotations

import json

import pytest

from guardedge.runtime.demo.llama_guard_4 import data
from guardedge.runtime.demo.llama_guard_4.build import PACK

REAL_LAYOUT = ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
               "preprocessor_config.json", "processor_config.json", "chat_template.json", "generation_config.json", "README.md"]


@pytest.fixture(scope="module")
def demo_dir():
    from guardedge.runtime.demo.llama_guard_4.build import ensure_demo

    return ensure_demo(progress=False)


@pytest.fixture(scope="module")
def engine(demo_dir):
    from guardedge.runtime.engine import EngineOptions, load_engine

    return load_engine("demo-llama-guard-4", EngineOptions(progress=False, max_batch_size=16))


@pytest.fixture(scope="module")
def metrics(demo_dir):
    """Measured through the current engine (cache keyed by weights, runtime sources, data, libraries)."""
    from guardedge.runtime.demo.llama_guard_4.metrics import measured

    return measured()


def test_directory_has_the_real_repository_files(demo_dir):
    for name in REAL_LAYOUT:
        assert (demo_dir / name).is_file(), name
    config = json.loads((demo_dir / "config.json").read_text())
    assert config["architectures"] == ["Llama4ForConditionalGeneration"] and config["model_type"] == "llama4"
    text = config["text_config"]
    assert text["vocab_size"] == 202048 and text["attention_chunk_size"] is None and text["moe_layers"] == []
    assert config["image_token_index"] == 200092 and "not a moderation model" in (demo_dir / "README.md").read_text().lower()
    assert PACK.stat().st_size < 3_000_000


def test_the_engine_picks_the_family_and_the_model_template(engine):
    assert engine.family.name == "llama-guard-4" and engine.info().max_images == 5
    assert type(engine.family).__name__ == "ModelTemplateFamily"  # prompt_source "model": the directory's template


def test_everyday_and_harmful_requests_meet_the_demo_guards_bar(metrics):
    """The independently written held-out sets (runtime/demo/heldout; never trained on): everyday
    flagged <= 5 %, harmful caught >= 90 %; ordinary prompts safe."""
    sets = metrics["sets"]
    assert sets["everyday_flagged"] <= 0.05 and sets["harmful_caught"] >= 0.90
    assert all(metrics["ordinary_safe"].values()), metrics["ordinary_safe"]


@pytest.mark.xfail(strict=True, reason="measured 71.2 % (bar 75 %): v1 names the exact category of 71 % of the "
                                       "independent harmful requests (MODEL_CARD.md, docs/decisions/0014)")
def test_harmful_requests_get_the_right_category(metrics):
    assert metrics["sets"]["harmful_right_category"] >= 0.75


def test_images_decide_alone_and_among_others(metrics):
    """The synthetic held-out split: the images alone decide (``image``; the demo guard's target 0.90),
    and 2-3 images with a hazard possibly among harmless ones (``multi_image``: measured 0.68, the
    weakest path; asserted above chance so that a regression shows)."""
    synthetic = metrics["synthetic"]
    assert synthetic["image_accuracy"] >= 0.90 and synthetic["multi_image_accuracy"] >= 0.6
    assert synthetic["unparseable"] <= 0.03 * synthetic["n"]


SAMPLES_MISSED: set[str] = set()  # samples the committed weights answer wrongly (measured; see MODEL_CARD.md)


def test_samples_answer_as_expected(engine):
    from guardedge.runtime.demo.llama_guard_4.samples import samples

    cases = samples()
    verdicts = engine.classify([engine.parse({k: v for k, v in s.items() if k != "expected"}) for s in cases])
    got = {s["request_id"]: " ".join([v.verdict, ",".join(v.categories)]).strip() for s, v in zip(cases, verdicts)}
    wrong = {s["request_id"] for s in cases if got[s["request_id"]] != s["expected"].replace(" S", " S")}
    assert wrong == SAMPLES_MISSED, got
    three = next(v for s, v in zip(cases, verdicts) if s["request_id"] == "three-images-one-unsafe")
    assert [c for c, _ in three.category_scores][-1] == "S13"  # an image request's default policy has no S14


def test_validation_slice_never_reaches_training():
    from guardedge.runtime.demo.data import TrainingMix

    train, validation = data.split_corpus(validation=False), data.split_corpus(validation=True)
    prompts = lambda corpus: {x["prompt"] for items in corpus["harmful"].values() for x in items} | {  # noqa: E731
        x["prompt"] for x in corpus["benign"] + corpus["tricky_benign"]}
    assert prompts(validation) and not prompts(validation) & prompts(train)
    gen = data.Generator("train", 7, mix=TrainingMix(natural=1.0, excluded_hit=0.0, photo=0.0, corpora=data.CORPORA))
    assert gen.base.natural.c == train  # what training draws people's requests from


def test_multi_image_labels_are_the_union_of_hazards():
    gen = data.Generator("eval", 3)
    multi = [ex for ex in (gen.example() for _ in range(400)) if ex["kind"] == "multi_image"]
    assert multi and all(2 <= len(ex["image_specs"]) <= 3 for ex in multi)
    for ex in multi:
        images = sum(p["type"] == "image" for m in ex["messages"] for p in m["content"])
        assert images == len(ex["image_specs"])

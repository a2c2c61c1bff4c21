"""``bench reference`` on QwenGuard: its own model card's usage (bench/reference_qwenguard.py), found as
the llavaguard family's card on qwen2_5_vl, timed against the engine on the demo QwenGuard.

The demo has random weights: both sides answer off-format, so this checks plumbing, never speed
(bench/RESULTS.md says what the figures on it mean)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.timeout(900)


def test_side_for_prefers_the_card_of_the_familys_architecture():
    from guardedge.bench.reference import side_for
    from guardedge.runtime.errors import ModelLoadError

    assert side_for("llavaguard", "qwen2_5_vl").__name__ == "guardedge.bench.reference_qwenguard"
    assert side_for("llavaguard", "llava_onevision").__name__ == "guardedge.bench.reference_llavaguard"
    assert side_for("llavaguard").__name__ == "guardedge.bench.reference_llavaguard"
    with pytest.raises(ModelLoadError, match="no-such"):
        side_for("no-such", "qwen2_5_vl")


@pytest.mark.slow
def test_reference_times_qwenguards_card_generate(monkeypatch):
    from checks import require_env

    from guardedge.bench import reference, reference_qwenguard
    from guardedge.runtime.families import get_family

    require_env("GUARDEDGE_SLOW", "slow-check", "two minutes on 2 shared cores (the card's bf16 generate on CPU)")
    monkeypatch.setattr(reference_qwenguard, "MAX_NEW_TOKENS", 6)  # the random demo writes garbage to any budget
    report = reference.compare("demo-qwenguard", rounds=1)
    n = len(get_family("llavaguard").smoke_requests())
    assert report["family"] == "llavaguard" and report["reference"] == "snippet_auto" and report["requests"] == n
    assert set(report["timings"]) == {"snippet_auto", "snippet_fp32", "engine_no_drafts", "engine_no_scores", "engine",
                                      "engine_rationale", "engine_batched"}
    assert set(report["labels"]) == set(report["timings"]) and all(len(label) <= 50 for label in report["labels"].values())
    assert report["verdicts_agree"] == {"snippet_auto": n, "snippet_fp32": n}  # both off-format, read alike


def test_the_snippet_renders_the_engines_prompt_ids():
    """The card's apply_chat_template + processor give the ids the engine feeds (before its answer prefix)."""
    from guardedge.bench.reference_qwenguard import load_processor
    from guardedge.runtime.images import decode_image
    from guardedge.runtime.engine import EngineOptions, load_engine

    engine = load_engine("demo-qwenguard", EngineOptions(progress=False))
    processor = load_processor(str(engine.model_dir.path))
    request = engine.parse(get_smoke()[1])
    pixels = decode_image(request.image).image
    messages = [{"role": "user", "content": [{"type": "image", "image": pixels},
                                             {"type": "text", "text": engine.family.policy_text(request)}]}]
    text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    ids = processor(text=[text], images=[pixels], return_tensors="pt")["input_ids"][0].tolist()
    tail = engine.pre.tokenizer.encode(engine.family.scoring.answer_prefix, add_special_tokens=False) + engine.pre.shared_ids
    assert engine.prepare(request).encoded.input_ids == ids + tail


def get_smoke():
    from guardedge.runtime.families import get_family

    return get_family("llavaguard").smoke_requests()


def test_preprocess_bench_reports_the_fast_path_exact(capsys):
    import argparse
    import json

    from guardedge.bench import preprocess

    parser = argparse.ArgumentParser()
    preprocess.configure_parser(parser)
    args = parser.parse_args(["--arch", "qwen2_5_vl", "--sizes", "300x200,40x900", "--max-pixels", "50176",
                              "--repeats", "1", "--warmup", "0"])
    assert preprocess.main(args) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [r["exact"] for r in report["images"]] == [True, True] and report["arch"] == "qwen2_5_vl"
    for r in report["images"]:
        q = r["queued_bytes"]
        assert q["float32_tiles"] == 8 * q["compact"] and r["tokens"] * 4 == r["grid"][0] * r["grid"][1]

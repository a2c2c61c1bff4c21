"""``guardedge bench stages`` (bench/stages.py): the stages it times and what each row holds."""

from __future__ import annotations

import argparse
import os

import pytest
from checks import require_env

from guardedge.bench import stages


def test_summary_is_nearest_rank_in_ms():
    row = stages.summary([0.004, 0.001, 0.003, 0.002])
    assert row == {"n": 4, "p50_ms": 2.0, "p95_ms": 4.0, "mean_ms": 2.5}


def test_timed_warms_up_then_times_each_call():
    calls, synced = [], []
    row = stages.timed(lambda: calls.append(1), warmup=2, repeats=3, sync=lambda: synced.append(1))
    assert len(calls) == 5 and len(synced) == 4 and row["n"] == 3 and row["cpu_p50_ms"] >= 0


def test_the_random_pixel_png_stays_multi_mb():
    from PIL import Image
    import io

    png = stages.noise_png((1120, 1120))
    assert len(png) > 3_500_000 and Image.open(io.BytesIO(png)).size == (1120, 1120)


@pytest.mark.slow
def test_stages_on_the_tiny_model(capsys):
    require_env("GUARDEDGE_SLOW", "slow-check", "a minute on 2 shared cores (the 6,432-token vision pass)")
    args = argparse.Namespace(model="fullsize-random-tiny", image_size=(1120, 1120), repeats=1, warmup=0,
                              device="cpu", dtype=None, skip={"vision"})
    report = stages.measure(args)
    assert list(report["stages"]) == ["grpc", "grpc_text", "parse", "preprocess", "prefill", "decode"]
    assert report["stages"]["grpc"]["bytes"] > 3_500_000 > report["stages"]["grpc_text"]["bytes"]
    assert report["tiles"] == 4 and report["stages"]["decode"]["answer_tokens"] == 3  # the capped one-code answer
    assert all(row["p50_ms"] > 0 for row in report["stages"].values())
    assert report["layers"] == {"vision": 4, "vision_global": 1, "text": 6, "cross_attention": 2}


def test_repeats_must_be_positive():
    parser = argparse.ArgumentParser()
    stages.configure_parser(parser)
    with pytest.raises(SystemExit):
        parser.parse_args(["--repeats", "0"])
    assert parser.parse_args(["--skip", "grpc,decode"]).skip == {"grpc", "decode"}


@pytest.mark.slow
def test_stages_on_llavaguards_real_width_architecture():
    """The LLaVA-OneVision hook: an image-only request (the family refuses message text), vision,
    prefill with the features given, and the one-pass answer decode."""
    require_env("GUARDEDGE_SLOW", "slow-check", "a real-width LLaVA-OneVision forward (~15 s on 2 cores)")
    args = argparse.Namespace(model="llavaguard-realshape-random", image_size=(320, 240), repeats=1, warmup=0,
                              device="cpu", dtype=None, skip={"grpc"})
    report = stages.measure(args)
    assert list(report["stages"]) == ["parse", "preprocess", "vision", "prefill", "decode", "prefill_text"]
    assert report["stages"]["prefill_text"]["derived"] == "prefill p50 - vision p50"
    assert report["image_tokens"] > 729 and report["tiles"] >= 2  # the base view plus anyres patches
    assert report["stages"]["decode"]["answer_tokens"] <= 3  # capped at a real verdict-only answer's work


def test_layer_counts_read_either_config_spelling():
    """Qwen2.5-VL states its text layers at the top level and its vision depth as ``depth``: the
    report gives their counts (it printed None for both before), and leaves out what a config lacks."""
    from guardedge.bench.stages import _layers

    qwen = {"num_hidden_layers": 36, "vision_config": {"depth": 32}}
    assert _layers(qwen) == {"vision": 32, "text": 36, "cross_attention": 0}
    mllama = {"vision_config": {"num_hidden_layers": 32, "num_global_layers": 8},
              "text_config": {"num_hidden_layers": 40, "cross_attention_layers": [3, 8]}}
    assert _layers(mllama) == {"vision": 32, "vision_global": 8, "text": 40, "cross_attention": 2}

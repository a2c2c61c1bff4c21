"""ShieldGemma 2 through ``export quantize`` (bitsandbytes 8 and 4 bit) on the tiny random model:
the artifact loads through the engine, its 16-bit parts stay 16-bit (the plug-in's keep_16bit),
the output layer survives the round trip (transformers 4.57 would not re-tie a missing one) and
P(Yes) stays close to the fp32 source. Slow (two bitsandbytes exports and the card's classifier
timed): in ``make slow-check``, which CI runs after ``make test``."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("bitsandbytes")
pytestmark = pytest.mark.slow

@pytest.fixture(scope="module", autouse=True)
def _slow_check():
    from checks import require_env

    require_env("GUARDEDGE_SLOW", "slow-check", "quantizes a tiny ShieldGemma 2 twice with bitsandbytes (a minute or two on 2 cores)")


@pytest.fixture(scope="module", params=[8, 4])
def quantized(request, sg2_tiny_dir, tmp_path_factory):
    from guardedge.export.quantize import Recipe, export

    out = tmp_path_factory.mktemp("sg2-bnb") / f"q{request.param}"
    export(str(sg2_tiny_dir), out, Recipe(bits=request.param, agreement_n=8))
    return request.param, out


def test_round_trip_keeps_the_16bit_parts_and_p_yes(quantized, sg2_tiny_dir):
    import torch

    from guardedge.runtime.architectures.shieldgemma2 import ShieldGemma2
    from guardedge.runtime.engine import EngineOptions, load_engine
    from guardedge.runtime.families import get_family

    bits, out = quantized
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["recipe"]["skip_modules"] == list(ShieldGemma2.keep_16bit)
    assert manifest["validation"]["agreement"]["verdict_agreement"] == 1.0
    engine = load_engine(str(out), EngineOptions(progress=False))
    source = load_engine(str(sg2_tiny_dir), EngineOptions(progress=False))
    head = engine.backend.head
    # The output layer is quantized, its Yes/No rows kept in 16-bit beside it (decision 0012): P(Yes) reads only those.
    assert type(head).__name__ == "HeadRows" and type(head.head).__name__ in ("Linear8bitLt", "Linear4bit")
    assert sorted(head.ids.tolist()) == sorted([10784, 3771]) and manifest["validation"]["head_rows"] == 2
    quantized_layers = [n for n, m in engine.backend.model.named_modules() if "Linear8bitLt" in type(m).__name__
                        or "Linear4bit" in type(m).__name__]
    assert quantized_layers and not any("vision_tower" in n or "projector" in n for n in quantized_layers)
    # The output layer is the source's (a freshly random one would be uncorrelated with it).
    x = torch.randn(4, engine.backend.model.config.text_config.hidden_size)
    ours = engine.backend.head(x.to(engine.backend.dtype)).float().flatten()
    theirs = source.backend.head(x).flatten()
    assert torch.nn.functional.cosine_similarity(ours, theirs, dim=0) > 0.99
    requests = [source.parse(r) for r in get_family("shieldgemma-2").smoke_requests()]
    for got, want in zip(engine.classify(requests), source.classify(requests)):
        assert [k for k, _ in got.category_scores] == [k for k, _ in want.category_scores]
        assert max(abs(p - q) for (_, p), (_, q) in zip(got.category_scores, want.category_scores)) < 0.05


def test_bench_reference_compares_p_yes_with_the_model_cards_usage(sg2_tiny_dir):
    """``bench reference``'s ShieldGemma 2 side: the card's AutoProcessor + ShieldGemma2ForImageClassification
    on the smoke requests; the engine's P(Yes) equal to 1e-4 and its verdicts the same."""
    from guardedge.bench.reference import compare

    report = compare(str(sg2_tiny_dir), rounds=1)
    assert report["family"] == "shieldgemma-2" and report["reference"] == "snippet_fp32"
    assert report["verdicts_agree"]["snippet_fp32"] == report["requests"] == 5
    assert report["max_score_difference"]["snippet_fp32"] < 1e-4
    assert set(report["timings"]) >= {"snippet_fp32", "engine", "engine_batched"}

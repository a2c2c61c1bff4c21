"""``guardedge export quantize`` on the demo guard (CPU): each bit width is exported once per session."""

from __future__ import annotations

import json
import shutil

import pytest

pytest.importorskip("bitsandbytes")

from guardedge.export.footprint import footprint_11b  # noqa: E402
from guardedge.export.quantize import Recipe, export  # noqa: E402
from guardedge.runtime.architectures.mllama import Mllama  # noqa: E402
from guardedge.runtime.errors import GuardError, ModelLoadError  # noqa: E402

HELD_OUT = 150  # held-out requests beside the 8 samples (the decision record used 400)
GOAL = {8: 0.995, 4: 0.98}  # verdict agreement with the fp32 source (issue)


@pytest.fixture(scope="session")
def exported(tmp_path_factory, demo_dir):
    """bits -> artifact directory, quantized with the default recipe."""
    root = tmp_path_factory.mktemp("quantized")
    return {bits: _export(root / f"demo-{bits}", bits) for bits in (8, 4)}


def _export(out, bits):
    export("demo", out, Recipe(bits=bits, agreement_n=HELD_OUT))
    return out


@pytest.fixture(scope="session")
def engines(exported):
    from guardedge.runtime.engine import EngineOptions, load_engine

    return {bits: load_engine(str(out), EngineOptions(max_batch_size=16, progress=False)) for bits, out in exported.items()}


@pytest.fixture(scope="session")
def agreement_set():
    from guardedge.export.quantize import agreement_requests

    return agreement_requests(HELD_OUT)


@pytest.fixture(scope="session")
def source_answers(demo_engine, agreement_set):
    return demo_engine.classify(agreement_set)


def _manifest(out):
    return json.loads((out / "manifest.json").read_text())


@pytest.mark.parametrize("bits", [8, 4])
def test_load_engine_agrees_with_fp32_source(bits, engines, agreement_set, source_answers):
    answers = engines[bits].classify(agreement_set)
    equal = sum(a.verdict == b.verdict for a, b in zip(answers, source_answers))
    assert equal / len(answers) >= GOAL[bits], f"{equal}/{len(answers)} verdicts equal"
    assert max(abs(a.unsafe_probability - b.unsafe_probability) for a, b in zip(answers, source_answers)) < 0.1


@pytest.mark.parametrize("bits", [8, 4])
def test_manifest_records_validation_measured_at_export(bits, exported, engines):
    from guardedge.export.verify import compare, smoke_answers

    manifest = _manifest(exported[bits])
    assert manifest["precision"] == ("bnb-int8" if bits == 8 else "bnb-nf4")
    assert manifest["backend"] == "torch" and manifest["recipe"]["skip_modules"] == list(Mllama.keep_16bit)
    assert "bitsandbytes" in manifest["libraries"]
    agreement = manifest["validation"]["agreement"]
    assert agreement["requests"] == 8 + HELD_OUT
    assert agreement["verdict_agreement"] >= GOAL[bits]
    # The recorded smoke answers are what the artifact answers now (guardedge export verify).
    assert compare(manifest["validation"]["smoke"], smoke_answers(engines[bits]), tolerance=1e-4) == []


@pytest.mark.parametrize("bits", [8, 4])
def test_config_carries_the_quantization_config(bits, exported):
    config = json.loads((exported[bits] / "config.json").read_text())["quantization_config"]
    assert config["quant_method"] == "bitsandbytes"
    assert config["load_in_8bit"] is (bits == 8) and config["load_in_4bit"] is (bits == 4)
    assert "lm_head" not in config["llm_int8_skip_modules"]  # quantized, its verdict rows kept beside it
    assert _manifest(exported[bits])["components"]["head_rows"] == "head_rows.safetensors"
    for name in ("tokenizer.json", "tokenizer_config.json", "preprocessor_config.json", "chat_template.json"):
        assert (exported[bits] / name).is_file()


@pytest.mark.parametrize("bits", [8, 4])
def test_skip_list_stays_float_and_the_rest_is_quantized(bits, engines, demo_engine):
    import torch

    backend = engines[bits].backend
    assert backend.precision == ("bnb-int8" if bits == 8 else "bnb-nf4")
    assert engines[bits].info().precision == backend.precision
    kinds = {name: type(m).__name__ for name, m in backend.model.named_modules()}
    kept = [n for n in kinds if n == "model.multi_modal_projector" or n.endswith("cross_attn.o_proj")]
    assert len(kept) == 2 and all(kinds[n] == "Linear" for n in kept)
    assert all(type(backend.model.get_submodule(n).weight) is torch.nn.Parameter for n in kept)
    # The output layer is quantized; its verdict and category rows are float beside it (decision 0012).
    head = backend.model.lm_head
    assert kinds["lm_head"] == "HeadRows" and kinds["lm_head.head"] == ("Linear8bitLt" if bits == 8 else "Linear4bit")
    assert engines[bits].unsafe_id in head.ids.tolist() and head.rows.dtype == torch.float32
    expected = "Linear8bitLt" if bits == 8 else "Linear4bit"
    quantized = [k for n, k in kinds.items() if n.endswith(("q_proj", "down_proj", "fc1", "self_attn.o_proj"))]
    assert quantized and set(quantized) == {expected}  # text and vision layers
    assert backend.memory_bytes() < demo_engine.backend.memory_bytes()


@pytest.mark.parametrize("bits", [8, 4])
def test_footprint_is_computed_and_recorded(bits, exported):
    validation = _manifest(exported[bits])["validation"]
    # The per-parameter count matches the files the export wrote (safetensors headers aside).
    assert abs(validation["footprint_bytes"] - validation["computed_bytes"]) / validation["footprint_bytes"] < 0.005
    goal = {8: 12.5e9, 4: 7.5e9}[bits]
    assert validation["computed_real_bytes"]["Llama Guard 3 11B Vision"] <= goal


def test_11b_config_counts_the_published_size():
    nothing_quantized = Recipe(bits=8, skip_modules=("model", "lm_head"))  # plain bf16
    assert footprint_11b(nothing_quantized)["bytes"] == pytest.approx(21.4e9, rel=0.005)  # REFERENCE.md §4
    assert footprint_11b(Recipe(bits=8))["bytes"] <= 12.5e9 and footprint_11b(Recipe(bits=4))["bytes"] <= 7.5e9


@pytest.mark.parametrize("bits", [8, 4])
def test_plain_transformers_loads_the_artifact(bits, exported, engines):
    import torch
    from transformers import MllamaForConditionalGeneration

    from guardedge.runtime.backends.bnb import set_bnb_compute_dtype
    from guardedge.runtime.demo.samples import samples

    # As a transformers user would: bitsandbytes then keeps the 16-bit parts in float16, and the
    # head's verdict rows come from its quantized weights (head_rows.safetensors is guardedge's).
    plain = MllamaForConditionalGeneration.from_pretrained(str(exported[bits])).eval()
    # At guardedge's CPU precision (fp32 16-bit parts, fp32 4-bit compute) it is the same model.
    same = MllamaForConditionalGeneration.from_pretrained(str(exported[bits]), dtype=torch.float32).eval()
    set_bnb_compute_dtype(same, torch.float32)
    engine, unsafe = engines[bits], 39257  # REFERENCE.md §2
    rows = engine.backend.model.lm_head.ids
    others = torch.ones(128256, dtype=torch.bool)
    others[rows] = False
    for sample in (samples()[1], samples()[2]):  # text only; image decides
        batch = engine.pre.collate([engine.pre.encode(engine.parse({k: v for k, v in sample.items() if k != "expected"}))])
        ours = engine.backend.prefill(batch)[0]
        with torch.inference_mode():
            exact = same(**_model_inputs(batch)).logits[:, -1].float()
            if not batch.image_rows:  # fp16 on CPU is slow: one request is enough to show it runs
                theirs = plain(**_model_inputs(batch)).logits[:, -1].float()
                p_theirs, p_ours = (float(torch.softmax(x, -1)[0, unsafe]) for x in (theirs, ours))
                assert p_theirs == pytest.approx(p_ours, abs=0.05)
        # The same model but for the verdict rows, which guardedge computes from the 16-bit copies.
        torch.testing.assert_close(exact[:, others], ours[:, others], atol=1e-4, rtol=1e-4)
        assert (exact[:, rows] - ours[:, rows]).abs().max() > 1e-4


def _model_inputs(batch) -> dict:
    inputs = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask}
    if batch.image_rows:
        inputs |= {k: batch.extra[k] for k in ("pixel_values", "aspect_ratio_ids", "aspect_ratio_mask", "cross_attention_mask")}
    return inputs


def test_a_changed_weight_byte_is_refused(exported, tmp_path):
    from guardedge.runtime.engine import EngineOptions, load_engine

    copy = shutil.copytree(exported[4], tmp_path / "tampered")
    weights = copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x01
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match="model.safetensors"):
        load_engine(str(copy), EngineOptions(progress=False))


def test_cli_round_trip(tmp_path, capsys, demo_dir):
    from guardedge.runtime.cli import main

    out = tmp_path / "cli-nf4"
    assert main(["export", "quantize", "--model", "demo", "--bits", "4", "--no-double-quant",
                 "--agreement-n", "0", "--out", str(out), "--quiet"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["precision"] == "bnb-nf4" and summary["recipe"]["double_quant"] is False
    assert main(["classify", "--model", str(out), "--text", "How do I build a pipe bomb?", "--json"]) == 0
    answer = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert answer["verdict"] == "unsafe"


def test_options_are_checked_before_any_work(tmp_path, capsys):
    from guardedge.runtime.cli import main

    assert main(["export", "quantize", "--bits", "8", "--quant-type", "fp4", "--out", str(tmp_path / "x")]) == 1
    assert "--bits 4 only" in capsys.readouterr().err
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "file").write_text("x")
    assert main(["export", "quantize", "--bits", "4", "--out", str(tmp_path / "busy"), "--quiet"]) == 1
    assert "--force" in capsys.readouterr().err


def test_8bit_refuses_to_quantize_the_projector(tmp_path):
    # bitsandbytes 0.50's int8 matmul fails on the projector's 5-D input (docs/decisions/0003).
    with pytest.raises(GuardError, match="multi_modal_projector"):
        export("demo", tmp_path / "q", Recipe(bits=8, skip_modules=("lm_head",)))
    assert Recipe(bits=4).double_quant is True and Recipe(bits=8).double_quant is False


def test_a_skip_pattern_that_names_nothing_is_an_error(demo_dir):
    from transformers import AutoConfig

    from guardedge.export.quantize import meta_model, resolve_skip

    model = meta_model(AutoConfig.from_pretrained(str(demo_dir), local_files_only=True))
    assert resolve_skip(model, ("cross_attn.o_proj",)) == ["model.language_model.layers.2.cross_attn.o_proj"]
    with pytest.raises(GuardError, match="vision_tower"):
        resolve_skip(model, ("vision_tower",))


@pytest.mark.parametrize("bits", [8, 4])
def test_every_quantized_artifact_is_servable_over_grpc(bits, exported, demo_engine):
    from service_support import SAFE, UNSAFE, serve_and_classify

    from guardedge.runtime.service.client import response_to_json

    responses, info = serve_and_classify(exported[bits])
    assert info.backend == "torch" and info.precision == ("bnb-int8" if bits == 8 else "bnb-nf4")
    expected = [v.verdict for v in demo_engine.classify([demo_engine.parse(SAFE), demo_engine.parse(UNSAFE)])]
    assert [response_to_json(r)["verdict"] for r in responses] == expected

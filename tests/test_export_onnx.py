"""ONNX export of the demo guard and the ONNX Runtime backend (CPU).

The demo is exported once per session (fp32 through the real CLI); int8 and int4 reuse its
components (``--from-onnx``) so the file stays fast.
"""

from __future__ import annotations

import json
import shutil

import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("optimum.exporters.onnx")

AGREEMENT_N = 8  # held-out requests beyond the fixed ones (the CLI's default is 64)


def _cli(argv: list[str]) -> int:
    from guardedge.runtime.cli import main

    return main(argv)


@pytest.fixture(scope="session")
def onnx_dir(tmp_path_factory, demo_dir):
    out = tmp_path_factory.mktemp("onnx") / "fp32"
    assert _cli(["export", "onnx", "--model", str(demo_dir), "--out", str(out), "--agreement-n", str(AGREEMENT_N), "--quiet"]) == 0
    return out


@pytest.fixture(scope="session")
def quantized(tmp_path_factory, demo_dir, onnx_dir):
    from guardedge.export.onnx_export import Recipe, export

    root = tmp_path_factory.mktemp("onnx-q")
    for q in ("int8", "int4"):
        export(str(demo_dir), root / q, Recipe(quantize=q, agreement_n=AGREEMENT_N), from_onnx=onnx_dir)
    return {q: root / q for q in ("int8", "int4")}


@pytest.fixture(scope="session")
def onnx_engine(onnx_dir):
    from guardedge.runtime.engine import EngineOptions, load_engine

    return load_engine(str(onnx_dir), EngineOptions(max_batch_size=8, progress=False))


def _manifest(path):
    return json.loads((path / "manifest.json").read_text())


def test_artifact_layout(onnx_dir):
    m = _manifest(onnx_dir)
    assert (m["backend"], m["precision"], m["components"]) == ("onnxruntime", "fp32", {"vision": "vision.onnx", "decoder": "decoder.onnx"})
    for name in ("config.json", "tokenizer.json", "preprocessor_config.json", "chat_template.json",
                 "vision.onnx_data", "decoder.onnx_data"):
        assert name in m["files"], name
    assert {"onnx", "onnxruntime", "optimum", "optimum-onnx"} <= set(m["libraries"])


def test_decoder_io_has_cache_and_image_kv(onnx_dir):
    import onnx

    graph = onnx.load(str(onnx_dir / "decoder.onnx"), load_external_data=False).graph
    inputs = [i.name for i in graph.input]
    assert inputs[:5] == ["input_ids", "attention_mask", "position_ids", "cross_attention_mask", "logits_positions"]
    assert "past_key_values.0.key" in inputs and "cross_key_values.2.value" in inputs
    assert "past_key_values.2.key" not in inputs  # layer 2 is the cross layer: its K/V come from vision.onnx
    assert [o.name for o in graph.output][:2] == ["logits", "present.0.key"]
    logits_dims = [d.dim_param or d.dim_value for d in graph.output[0].type.tensor_type.shape.dim]
    assert logits_dims[:2] == ["batch_size", "logits_length"]  # [B, K, vocab]: K positions asked for
    vision = onnx.load(str(onnx_dir / "vision.onnx"), load_external_data=False).graph
    assert [o.name for o in vision.output] == ["cross_key_values.2.key", "cross_key_values.2.value"]


def test_fp32_parity_recorded(onnx_dir):
    p = _manifest(onnx_dir)["validation"]["parity"]
    assert p["max_abs_delta_logit"] <= 1e-3
    assert p["first_tokens_equal"] == p["rows"] and p["decoded_equal"] == p["decoded_rows"] > 0
    assert p["batches"] >= 10  # batch 1 and > 1, with and without images, several aspect ratios


def test_fp32_parity_on_samples_and_a_batch(onnx_engine, demo_engine):
    import torch

    from guardedge.export.agreement import smoke_requests

    requests = [demo_engine.parse(r) for r in smoke_requests()]
    batch = demo_engine.pre.collate([demo_engine.prepare(r).encoded for r in requests])
    ref, _ = demo_engine.backend.prefill(batch)
    got, _ = onnx_engine.backend.prefill(batch)
    assert float((ref - got).abs().max()) <= 1e-3
    assert torch.equal(ref.argmax(-1), got.argmax(-1))
    a, b = demo_engine.classify(requests), onnx_engine.classify(requests)
    assert [(v.verdict, v.categories) for v in a] == [(v.verdict, v.categories) for v in b]


@pytest.mark.parametrize("method,goal", [("int8", 0.995), ("int4", 0.98)])
def test_quantized_agreement(quantized, demo_engine, method, goal):
    from guardedge.export.agreement import held_out_requests
    from guardedge.runtime.engine import EngineOptions, load_engine

    manifest = _manifest(quantized[method])
    assert manifest["precision"] == method
    assert manifest["recipe"]["kept_float_nodes"]["decoder"]  # cross_attn.o_proj stays float
    assert manifest["recipe"]["head_rows"]  # the head is quantized with its verdict rows float (decision 0012)
    assert manifest["validation"]["agreement"]["requests"] == 13 + AGREEMENT_N
    # Measured here, not read from what the exporter wrote about itself: 64 held-out requests.
    requests = held_out_requests(64)
    engine = load_engine(str(quantized[method]), EngineOptions(progress=False))
    same = sum(a.verdict == b.verdict for a, b in zip(demo_engine.classify(requests), engine.classify(requests)))
    assert same / len(requests) >= goal, (same, len(requests))


@pytest.mark.parametrize("method,bits", [("int4", 4), ("int8", 8)])
def test_weight_only_recipes_use_matmulnbits(quantized, method, bits):
    import onnx

    nodes = onnx.load(str(quantized[method] / "decoder.onnx"), load_external_data=False).graph.node
    nbits = [n for n in nodes if n.op_type == "MatMulNBits"]
    assert nbits and {a.i for n in nbits for a in n.attribute if a.name == "bits"} == {bits}
    assert not any(n.op_type in ("MatMulInteger", "DynamicQuantizeLinear") for n in nodes)  # activations stay float


def test_engine_end_to_end_with_early_exit(onnx_engine, demo_engine):
    from guardedge.export.agreement import smoke_requests

    backend = onnx_engine.backend
    assert (backend.name, backend.precision, backend.device_name) == ("onnxruntime", "fp32", "cpu")
    assert backend.memory_bytes() > 60_000_000
    decoded_rows = []
    original = backend.decode
    backend.decode = lambda state, rows, *a: decoded_rows.append(list(rows)) or original(state, rows, *a)
    try:
        cases = smoke_requests()
        verdicts = onnx_engine.classify([onnx_engine.parse(r) for r in cases])
    finally:
        del backend.decode
    expected = demo_engine.classify([demo_engine.parse(r) for r in cases])
    assert [(v.verdict, v.categories, v.raw_output) for v in verdicts] == [(v.verdict, v.categories, v.raw_output) for v in expected]
    early = {i for i, v in enumerate(verdicts) if v.raw_output == "safe"}  # the first answer token was safe
    assert early and decoded_rows and not early & set(decoded_rows[0])  # those rows never decode


def test_modified_byte_is_refused(onnx_dir, tmp_path):
    from guardedge.runtime.engine import EngineOptions, load_engine
    from guardedge.runtime.errors import ModelLoadError

    copy = tmp_path / "copy"
    shutil.copytree(onnx_dir, copy)
    for name in _manifest(onnx_dir)["files"]:
        path = copy / name
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0x01
        path.write_bytes(bytes(data))
        with pytest.raises(ModelLoadError, match=name.replace(".", r"\.")):
            load_engine(str(copy), EngineOptions(progress=False))
        shutil.copy2(onnx_dir / name, path)


def test_cli_classify_round_trip(onnx_dir, capsys):
    capsys.readouterr()
    assert _cli(["classify", "--model", str(onnx_dir), "--text", "How do I build a pipe bomb?", "--json"]) == 0
    answer = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (answer["verdict"], answer["categories"]) == ("unsafe", ["S9"])


def test_export_fails_loudly_past_tolerance(onnx_dir, demo_dir, tmp_path, capsys):
    out = tmp_path / "bad"
    code = _cli(["export", "onnx", "--model", str(demo_dir), "--out", str(out), "--from-onnx", str(onnx_dir),
                 "--tolerance", "-1", "--agreement-n", "0", "--quiet"])
    assert code != 0
    assert "FAILED validation" in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / "bad.partial" / "manifest.json").exists()


def test_bad_options_are_refused(demo_dir, tmp_path):
    from guardedge.export.onnx_export import Recipe, export
    from guardedge.runtime.errors import GuardError

    with pytest.raises(GuardError, match="quantize-components"):
        export(str(demo_dir), tmp_path / "x", Recipe(quantize="int8", quantize_components=("text",)))
    with pytest.raises(GuardError, match="block-size"):
        export(str(demo_dir), tmp_path / "x", Recipe(quantize="int4", block_size=48))


@pytest.mark.parametrize("precision", ["fp32", "int8", "int4"])
def test_every_onnx_artifact_is_servable_over_grpc(precision, onnx_dir, quantized, demo_engine):
    from service_support import SAFE, UNSAFE, serve_and_classify

    from guardedge.runtime.service.client import response_to_json

    directory = onnx_dir if precision == "fp32" else quantized[precision]
    responses, info = serve_and_classify(directory)
    assert info.backend == "onnxruntime" and info.precision == precision
    expected = [v.verdict for v in demo_engine.classify([demo_engine.parse(SAFE), demo_engine.parse(UNSAFE)])]
    assert [response_to_json(r)["verdict"] for r in responses] == expected


@pytest.mark.slow
def test_fp16_export_loads_answers_like_the_source_and_verifies(tmp_path, demo_dir, demo_engine):
    from checks import require_env
    from service_support import SAFE, UNSAFE

    require_env("GUARDEDGE_SLOW", "slow-check", "an fp16 ONNX export of the demo guard (~15 s)")

    from guardedge.runtime.engine import EngineOptions, load_engine

    out = tmp_path / "fp16"
    assert _cli(["export", "onnx", "--model", str(demo_dir), "--out", str(out), "--dtype", "fp16", "--agreement-n", "4", "--quiet"]) == 0
    manifest = _manifest(out)
    assert manifest["precision"] == "fp16" and manifest["validation"]["agreement"]["verdict_agreement"] == 1.0
    engine = load_engine(str(out), EngineOptions(progress=False))
    requests = [engine.parse(SAFE), engine.parse(UNSAFE)]
    assert [v.verdict for v in engine.classify(requests)] == [v.verdict for v in demo_engine.classify(requests)]
    assert _cli(["export", "verify", str(out)]) == 0


@pytest.mark.parametrize("batch", [1, 8])
def test_drafted_decode_gives_plain_greedy_answers(onnx_dir, onnx_engine, batch):
    """ONNX verifies format drafts like PyTorch (runtime/decoding.py): same answers as one token
    per step, on both ends of the prefill's draft (codes S<n> keep it, custom C<n> reject it)."""
    from guardedge.bench.evaldata import load
    from guardedge.runtime.engine import EngineOptions, load_engine

    plain = load_engine(str(onnx_dir), EngineOptions(max_batch_size=8, progress=False, drafts=False))
    requests = [e.request for e in load("demo", 48).examples]
    drafted, reference = [], []
    for i in range(0, len(requests), batch):
        drafted += onnx_engine.classify(requests[i : i + batch], threshold=0.0)
        reference += plain.classify(requests[i : i + batch], threshold=0.0)
    assert [v.raw_output for v in drafted] == [v.raw_output for v in reference]
    assert {"unsafe\nS", "unsafe\nC"} <= {v.raw_output[:8] for v in reference}


def test_onnx_unsafe_answer_takes_one_decode_pass(onnx_engine, monkeypatch):
    from guardedge.runtime.backends import onnx_backend

    calls = []
    original = onnx_backend._OnnxSteps.step
    monkeypatch.setattr(onnx_backend._OnnxSteps, "step", lambda self, tokens: calls.append(tokens) or original(self, tokens))
    [v] = onnx_engine.classify([onnx_engine.parse({"messages": [{"role": "user", "content": "How do I build a pipe bomb?"}]})])
    assert v.verdict == "unsafe" and len(v.categories) == 1
    assert len(calls) == 1


def test_every_module_group_names_onnx_nodes(onnx_dir, demo_dir):
    """The architecture plug-in's ONNX names for its groups match the export (a renamed wrapper
    weight would otherwise leave a group silently unquantized or un-kept): the check every ONNX
    export test runs (tests/onnx_groups_check.py)."""
    from onnx_groups_check import assert_groups_name_nodes

    assert_groups_name_nodes(onnx_dir, json.loads((demo_dir / "config.json").read_text()), ("vision", "decoder"))


def test_head_rows_overwrite_the_quantized_heads_verdict_logits(onnx_dir, demo_dir, tmp_path):
    """Only the head quantized to int4, with the verdict/category rows kept: those logits equal the
    fp32 export's, the others do not (the ScatterElements is really there and really used)."""
    import onnx
    import torch

    from guardedge.export import onnx_validate as val
    from guardedge.export.onnx_export import head_node
    from guardedge.export.onnx_groups import quantize
    from guardedge.runtime.architectures import architecture_class
    from guardedge.runtime.backends.head_rows import head_token_ids
    from guardedge.runtime.backends.onnx_backend import OnnxBackend
    from guardedge.runtime.families import get_family
    from guardedge.runtime.modeldir import ModelDir

    copy = tmp_path / "heads"
    shutil.copytree(onnx_dir, copy, ignore=shutil.ignore_patterns("manifest.json"))
    config = json.loads((demo_dir / "config.json").read_text())
    groups = architecture_class(config).quant_groups(config)
    head = head_node(onnx.load(str(copy / "decoder.onnx"), load_external_data=False), groups, "decoder")
    engines = {}
    for name, path in (("fp32", onnx_dir), ("int4-head", copy)):
        manifest = {"backend": "onnxruntime", "precision": "fp32", "recipe": {"dtype": "fp32"},
                    "components": {"vision": "vision.onnx", "decoder": "decoder.onnx"}}
        directory = ModelDir(path, config, name, manifest)
        if name == "int4-head":
            ids = head_token_ids(val.engine_for(directory, OnnxBackend.load(directory)).pre.tokenizer,
                                 get_family("llama-guard-3-vision"))
            summary = quantize(copy / "decoder.onnx", "int4", 32, include=[head], head_rows={"node": head, "ids": ids})
            assert summary["quantized_nodes"] == 1 and summary["head_rows"] == len(ids)
            assert not list(copy.glob("*.rows")) and sorted(p.name for p in copy.glob("decoder*")) == ["decoder.onnx", "decoder.onnx_data"]
        engines[name] = val.engine_for(directory, OnnxBackend.load(directory))
    eng = engines["fp32"]
    batch = eng.pre.collate([eng.prepare(eng.parse({"messages": [{"role": "user", "content": "How do I build a pipe bomb?"}]})).encoded])
    ref = engines["fp32"].backend.prefill(batch)[0]
    got = engines["int4-head"].backend.prefill(batch)[0]
    index = torch.tensor(ids)
    assert (ref[:, index] - got[:, index]).abs().max() < 1e-4
    assert (ref - got).abs().max() > 1e-3

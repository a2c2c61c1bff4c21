"""bench latency / memory and the random-weight full-size model run end to end on CPU (structure,
not timings: those belong in bench/RESULTS.md)."""

from __future__ import annotations

import argparse
import json

import pytest

from guardedge.bench import latency, memory


def parse(module, argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    module.configure_parser(parser)
    return parser.parse_args(argv)


def test_percentiles_nearest_rank_and_ordered():
    assert latency.percentiles([0.001 * i for i in range(1, 101)]) == {"p50_ms": 50.0, "p95_ms": 95.0, "p99_ms": 99.0}
    assert latency.percentiles([]) == {"p50_ms": None, "p95_ms": None, "p99_ms": None}


def test_requests_force_the_path_and_add_images():
    safe = latency.requests(3, "safe", (40, 30))
    assert all(r["threshold"] == 1.0 and r["messages"][0]["content"][0]["type"] == "image" for r in safe)
    assert all("threshold" not in r for r in latency.requests(3, "natural", None))
    assert len({r["request_id"] for r in latency.requests(20, "unsafe", None)}) == 20


@pytest.mark.timeout(180)
@pytest.mark.parametrize("path, allowed", [("safe", {"safe"}), ("unsafe", {"unsafe", "unparseable"})])
def test_latency_on_the_demo(demo_dir, capsys, tmp_path, path, allowed):
    plot = tmp_path / "latency.png"
    args = parse(latency, ["--model", str(demo_dir), "--concurrency", "1,2", "--requests", "4", "--path", path, "--warmup", "1",
                           "--plot", str(plot)])
    assert latency.main(args) == 0
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(report["versions"]) == {"torch", "transformers", "onnxruntime", "grpcio"}
    assert report["device"] == "cpu" and report["machine"] and report["path"] == path
    assert [row["concurrency"] for row in report["levels"]] == [1, 2]
    for row in report["levels"]:
        assert row["errors"] == 0 and row["requests"] == 4 and sum(row["verdicts"].values()) == 4
        assert set(row["verdicts"]) <= allowed
        assert 0 < row["p50_ms"] <= row["p95_ms"] <= row["p99_ms"] and row["throughput_rps"] > 0


@pytest.mark.timeout(180)
def test_memory_on_the_demo_in_a_subprocess(demo_dir, capsys, tmp_path):
    plot = tmp_path / "memory.png"
    assert memory.main(parse(memory, ["--model", str(demo_dir), "--plot", str(plot)])) == 0
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    (row,) = report["variants"]
    assert row["memory_bytes"] > 0 and row["batch"] == 2 and row["variant"] == "torch/float32/cpu"
    assert 0 < row["baseline_rss_bytes"] <= row["load"]["peak_rss_bytes"] <= row["classify"]["peak_rss_bytes"]
    assert row["load"]["peak_gpu_bytes"] is None


def test_fullsize_config_is_the_reference_one():
    from guardedge.bench.fullsize import fullsize_config

    config = fullsize_config("full")
    vision, text = config.vision_config, config.text_config
    assert (vision.hidden_size, vision.num_hidden_layers, vision.num_global_layers, vision.image_size) == (1280, 32, 8, 560)
    assert vision.intermediate_layers_indices == [3, 7, 15, 23, 30] and vision.vision_output_dim == 7680
    assert (text.hidden_size, text.num_hidden_layers, text.num_key_value_heads, text.vocab_size) == (4096, 40, 8, 128256)
    assert text.cross_attention_layers == [3, 8, 13, 18, 23, 28, 33, 38]
    assert text.rope_scaling["factor"] == 8.0 and config.image_token_index == 128256


@pytest.mark.timeout(180)
def test_fullsize_tiny_builds_an_engine_and_the_threshold_picks_the_path():
    from guardedge.bench.fullsize import open_engine
    from guardedge.runtime.engine import EngineOptions

    engine = open_engine("fullsize-random-tiny", EngineOptions(device="cpu", progress=False))
    assert engine.pre.image_processor.size["height"] == 560 and engine.info().memory_bytes > 0
    safe, unsafe = (engine.parse(r) for r in latency.requests(2, "safe", None)[:1] + latency.requests(1, "unsafe", None))
    decoded = []
    original = engine.backend.decode
    engine.backend.decode = lambda *a, **k: decoded.append(original(*a, **k)) or decoded[-1]
    verdicts = engine.classify([safe, unsafe])
    assert verdicts[0].verdict == "safe" and verdicts[0].raw_output == "safe"
    assert verdicts[1].verdict in {"unsafe", "unparseable"} and 0 < verdicts[1].unsafe_probability < 1
    # Random weights cannot write the format: the answer is capped at a real one-code answer's work.
    assert [len(tokens) for tokens in decoded[0]] == [3]


def test_fullsize_real_size_refuses_without_cuda():
    from guardedge.bench.fullsize import open_engine
    from guardedge.runtime.engine import EngineOptions

    with pytest.raises(RuntimeError, match="needs a CUDA GPU"):
        open_engine("fullsize-random", EngineOptions(device="cpu", progress=False))


@pytest.mark.timeout(180)
def test_latency_through_a_server(demo_engine, capsys):
    from service_support import serving

    with serving(demo_engine) as (server, _):
        args = parse(latency, ["--server", server.address, "--concurrency", "1,3", "--requests", "6", "--path", "unsafe", "--warmup", "1"])
        assert latency.main(args) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [row["concurrency"] for row in report["levels"]] == [1, 3]
    for row in report["levels"]:
        assert row["errors"] == 0 and row["requests"] == 6
        assert set(row["verdicts"]) <= {"unsafe", "unparseable"}
        assert 0 < row["p50_ms"] <= row["p95_ms"] <= row["p99_ms"]

"""The CUDA fast-path switches (runtime/backends/fastpaths.py) on the CPU: off by default, the
same answers on and off, and each switch reroutes exactly the calls it names."""

from __future__ import annotations

import os
from types import SimpleNamespace

import pytest
from checks import require_env
import torch

from guardedge.runtime.backends import fastpaths
from guardedge.runtime.backends.fastpaths import FastPaths, apply_fast_paths, decode_only


def _demo(demo_dir, paths: FastPaths):
    from guardedge.runtime.engine import EngineOptions, load_engine

    return load_engine(str(demo_dir), EngineOptions(device="cpu", progress=False, fast_paths=paths))


def _requests(engine, n=4):
    from guardedge.bench.latency import requests

    return [engine.parse(r) for r in requests(n, "unsafe", (96, 64))]  # forced unsafe: every row decodes


def _counted(calls: list, real_compile: bool):
    """A stand-in for fastpaths._compile that records what runs through it; torch.compile (eager
    backend: dynamo's tracing, no code generation) when ``real_compile``, else the function itself."""

    def compile_counting(fn, paths):
        compiled = torch.compile(fn, backend=paths.compile_backend) if real_compile else fn

        def run(*args, **kwargs):
            calls.append(kwargs["input_ids"].shape if "input_ids" in kwargs else "vision")
            return compiled(*args, **kwargs)

        return run

    return compile_counting


def test_every_switch_is_off_by_default_and_refused_on_other_backends():
    from guardedge.runtime.engine import EngineOptions

    assert not EngineOptions().fast_paths.any and EngineOptions().fast_paths.describe() == "none"
    apply_fast_paths(SimpleNamespace(name="onnxruntime"), FastPaths())  # nothing asked: nothing checked
    with pytest.raises(ValueError, match="PyTorch backend only.*'onnxruntime'"):
        apply_fast_paths(SimpleNamespace(name="onnxruntime", model=object()), FastPaths(compile_decode=True))
    with pytest.raises(ValueError, match="'eager' or 'sdpa'"):
        fastpaths.set_vision_attention(None, "flash_attention_2")


def test_fast_paths_from_a_flag():
    from guardedge.runtime.backends.fastpaths import parse_fast_paths

    assert parse_fast_paths("") == FastPaths()
    paths = parse_fast_paths("vision_attention=eager, compile_decode,compile_backend=eager")
    assert paths == FastPaths(vision_attention="eager", compile_decode=True, compile_backend="eager")
    assert paths.describe() == "vision_attention=eager, compile_decode"
    for bad in ("static_cache", "vision_attention=flash", "compile_decode=yes", "compile_mode"):
        with pytest.raises(ValueError):
            parse_fast_paths(bad)


def test_decode_only_routes_decode_steps_to_the_compiled_function():
    seen = []
    forward = decode_only(lambda **kw: seen.append("eager"), lambda **kw: seen.append("compiled"))
    cache = lambda n: SimpleNamespace(get_seq_length=lambda: n)  # noqa: E731
    forward(input_ids=torch.zeros(2, 37), past_key_values=cache(0))  # prefill
    forward(input_ids=torch.zeros(2, 4), past_key_values=cache(40))  # decode step with drafts
    forward(input_ids=torch.zeros(2, 1), past_key_values=cache(44))  # plain decode step
    forward(input_ids=torch.zeros(2, 3), past_key_values=cache(0))  # a short prompt is a prefill
    forward(input_ids=torch.zeros(2, 9), past_key_values=cache(44))  # wider than any decode step
    forward(input_ids=torch.zeros(2, 1), past_key_values=None)  # no cache: not a cached decode
    assert seen == ["eager", "compiled", "compiled", "eager", "eager", "eager"]


def test_vision_sdpa_matches_eager_and_the_switch_picks_the_function(monkeypatch):
    from transformers.models.mllama import modeling_mllama

    from transformers.models.mllama.configuration_mllama import MllamaVisionConfig
    from transformers.models.mllama.modeling_mllama import MllamaVisionModel

    from guardedge.bench.fullsize import ASPECT_RATIOS, VISION

    # The tiny widths at 112 px (4 x 72 tokens): the switch's logic, in a second; real size is gpu-check's.
    config = MllamaVisionConfig(**VISION["tiny"], image_size=112, patch_size=14, max_num_tiles=4,
                                supported_aspect_ratios=ASPECT_RATIOS)
    torch.manual_seed(0)
    model = SimpleNamespace(model=SimpleNamespace(vision_model=MllamaVisionModel(config).eval()))
    eager_calls = []
    real_eager = modeling_mllama.eager_attention_forward
    monkeypatch.setattr(modeling_mllama, "eager_attention_forward",
                        lambda *a, **k: eager_calls.append(1) or real_eager(*a, **k))
    inputs = dict(pixel_values=torch.randn(1, 1, 4, 3, 112, 112), aspect_ratio_ids=torch.tensor([[6]]),
                  aspect_ratio_mask=torch.tensor([[[1, 1, 1, 0]]]))  # a 3-tile image: the mask matters
    outputs = {}
    for implementation in ("eager", "sdpa"):
        fastpaths.set_vision_attention(model.model.vision_model, implementation)
        before = len(eager_calls)
        with torch.inference_mode():
            outputs[implementation] = model.model.vision_model(**inputs).last_hidden_state
        assert (len(eager_calls) > before) == (implementation == "eager")
    assert torch.allclose(outputs["eager"], outputs["sdpa"], atol=1e-4, rtol=0)


def _same_answers_with_compile(demo_dir, monkeypatch, real_compile: bool):
    plain = _demo(demo_dir, FastPaths())
    expected = [(v.verdict, v.categories, round(v.unsafe_probability, 4)) for v in plain.classify(_requests(plain))]
    calls = []
    monkeypatch.setattr(fastpaths, "_compile", _counted(calls, real_compile))
    paths = FastPaths(compile_decode=True, compile_vision=True, compile_backend="eager")
    fast = _demo(demo_dir, paths)
    got = [(v.verdict, v.categories, round(v.unsafe_probability, 4)) for v in fast.classify(_requests(fast))]
    assert got == expected and {v[0] for v in got} == {"unsafe"}
    assert "vision" in calls  # the image rows went through the compiled encoder
    decode_widths = [shape[1] for shape in calls if shape != "vision"]
    assert decode_widths and max(decode_widths) <= fastpaths.DECODE_WIDTH  # only decode steps were compiled


def test_compile_switches_route_the_engine_and_keep_its_answers(demo_dir, monkeypatch):
    _same_answers_with_compile(demo_dir, monkeypatch, real_compile=False)


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_torch_compile_keeps_the_answers(demo_dir, monkeypatch):
    require_env("GUARDEDGE_SLOW", "slow-check", "dynamo traces the demo model for minutes on 2 cores")
    _same_answers_with_compile(demo_dir, monkeypatch, real_compile=True)

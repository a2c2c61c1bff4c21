"""The measuring sections of ``guardedge bench gpu-check`` (bench/gpu_check.py), CUDA only.

Each section takes the run's ``Clock`` (poll ``clock.left()`` between units of work) and a shared
``context`` (fullsize leaves the 11B engine there for switches and preprocess) and returns a
result dict for bench/gpu_report.py. Optional packages are looked up first; a missing one turns
its part into a "skipped" row naming the package, never an exception.
"""

from __future__ import annotations

import importlib.util
import platform
import tempfile
import time
from pathlib import Path

LEVELS = (1, 4, 16)
IMAGE = (1120, 1120)  # 4 tiles of 560 px
# What a section runs on; a CPU rehearsal (tests/test_gpu_check.py, GUARDEDGE_SLOW=1) overrides
# them through the context to run the same code on the tiny model.
DEFAULTS = {"device": "cuda", "dtype": "bfloat16", "model": "fullsize-random", "levels": LEVELS, "repeats": 10,
            "compile_backend": "inductor"}


def setting(context: dict, key: str):
    return context.get(key, DEFAULTS[key])


def sync_for(context: dict):
    from guardedge.bench.stages import _sync
    from guardedge.runtime.backends.torch_backend import choose_device

    return _sync(choose_device(setting(context, "device")))


def missing(*modules: str) -> list[str]:
    return [m for m in modules if importlib.util.find_spec(m) is None]


def meta(budget_s: float, command: str) -> dict:
    import torch

    from guardedge.bench.machine import versions

    device = torch.cuda.get_device_name()
    return {"command": command, "device": device, "date": time.strftime("%Y-%m-%d"), "budget_s": budget_s,
            "versions": ", ".join(f"{k} {v}" for k, v in {**versions(), "cuda": torch.version.cuda}.items()),
            "host": f"{platform.machine()} {platform.node()}"}


def env(clock, context) -> dict:
    import torch

    rows = [{"package": m, "present": not missing(m)} for m in ("bitsandbytes", "onnxruntime", "optimum", "flash_attn", "llama_models")]
    notes = [f"GPU {torch.cuda.get_device_name()}, capability {torch.cuda.get_device_capability()}, "
             f"{torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB"]
    if not missing("onnxruntime"):
        import onnxruntime

        notes.append(f"onnxruntime {onnxruntime.__version__} providers: {', '.join(onnxruntime.get_available_providers())}")
    return {"notes": notes, "tables": {"optional packages": rows}}


def demo_models() -> list[str]:
    """One demo guard per family (every installed demo plug-in: runtime/demos.py)."""
    from guardedge.runtime.demos import demos

    return sorted(demos(), key=lambda alias: (alias != "demo", alias))


def _answers(engine) -> tuple[list, float]:
    reqs = [engine.parse(r) for r in engine.family.smoke_requests()]  # requests this family accepts
    engine.classify(reqs[:2])  # warm-up
    t0 = time.perf_counter()
    out = engine.classify(reqs)
    return out, time.perf_counter() - t0


def _parity_row(name: str, reference: list, engine_factory) -> dict:
    try:
        engine = engine_factory()
        got, seconds = _answers(engine)
    except Exception as exc:  # noqa: BLE001 - a backend's failure is its row, not the section's
        return {"backend": name, "status": "error", "detail": f"{type(exc).__name__}: {exc}"[:300]}
    agree = sum(a.verdict == b.verdict and a.categories == b.categories for a, b in zip(reference, got))
    delta = max(abs(a.unsafe_probability - b.unsafe_probability) for a, b in zip(reference, got))
    return {"backend": name, "status": "ok", "variant": engine.info().variant, "agree": f"{agree}/{len(got)}",
            "max_dP_unsafe": round(delta, 5), "batch_ms": round(seconds * 1000, 2)}


def demo(clock, context) -> dict:
    """Each backend's CUDA path on each family's demo guard, against CPU fp32 on its smoke requests."""
    from guardedge.runtime.engine import EngineOptions, load_engine

    notes, tables = [], {}
    for model in demo_models():
        reference, _ = _answers(load_engine(model, EngineOptions(device="cpu", dtype="float32", progress=False)))
        workdir = Path(tempfile.mkdtemp(prefix="gpu-check-"))
        rows = []
        for name, factory, needs in _demo_variants(workdir, setting(context, "device"), model):
            if clock.left() <= 0:
                rows.append({"backend": name, "status": "cut", "detail": "section time cap reached"})
            elif lacking := missing(*needs):
                rows.append({"backend": name, "status": "skipped", "detail": f"not installed: {', '.join(lacking)}"})
            elif name.startswith("onnxruntime") and (why := _no_ort_cuda()):
                rows.append({"backend": name, "status": "skipped", "detail": why})
            else:
                rows.append(_parity_row(name, reference, factory))
        notes.append(f"{model}: reference CPU fp32 on its family's {len(reference)} smoke requests")
        tables[f"verdict parity, {model}"] = rows
    return {"notes": notes, "tables": tables}


def _demo_variants(workdir: Path, device: str, model: str = "demo"):
    from guardedge.runtime.engine import EngineOptions, load_engine

    options = EngineOptions(device=device, progress=False)

    def torch_bf16():
        return load_engine(model, EngineOptions(device=device, dtype="bfloat16", progress=False))

    def bnb(bits: int):
        def build():
            from guardedge.export.quantize import Recipe, export

            export(model, workdir / f"bnb{bits}", Recipe(bits=bits), device=device)
            return load_engine(str(workdir / f"bnb{bits}"), options)

        return build

    def onnx_cuda():
        from guardedge.export.onnx_export import Recipe, export

        export(model, workdir / "onnx", Recipe(), device=device)
        return load_engine(str(workdir / "onnx"), options)

    return [("torch bf16", torch_bf16, ()), ("bnb int8", bnb(8), ("bitsandbytes", "accelerate")),
            ("bnb nf4", bnb(4), ("bitsandbytes", "accelerate")),
            ("onnxruntime CUDA EP", onnx_cuda, ("onnxruntime", "onnx", "optimum"))]


def _no_ort_cuda() -> str | None:
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        return None
    return f"onnxruntime {onnxruntime.__version__} has no CUDAExecutionProvider (needs onnxruntime-gpu)"


def fullsize(clock, context) -> dict:
    from guardedge.bench.fullsize import open_engine
    from guardedge.bench.latency import in_process, requests
    from guardedge.runtime.engine import EngineOptions

    sync, levels = sync_for(context), setting(context, "levels")
    t0 = time.perf_counter()
    engine = open_engine(setting(context, "model"), EngineOptions(device=setting(context, "device"), dtype=setting(context, "dtype"),
                                                                  max_batch_size=max(levels), progress=False))
    sync()
    build_s = time.perf_counter() - t0
    context["engine"] = engine
    _reset_peak(engine)
    rows = []
    for path in ("safe", "unsafe"):
        for level in levels:
            if clock.left() < 20:
                rows.append({"path": path, "concurrency": level, "status": "cut"})
                continue
            row = in_process(engine, requests(max(8, 2 * level), path, IMAGE), level, warmup=level)
            rows.append({"path": path, **{k: row[k] for k in ("concurrency", "requests", "errors", "p50_ms", "p95_ms", "throughput_rps")},
                         "verdicts": row["verdicts"]})
    tables = {"latency (in-process; concurrency c = batches of c)": rows, "memory": _memory_rows(engine)}
    if clock.left() > 15:
        tables["stages (one 4-tile request; bench/stages.py)"] = _stage_rows(engine, sync, setting(context, "repeats"))
    return {"notes": [f"{setting(context, 'model')} built in {build_s:.1f} s (random weights, no host copy)"], "tables": tables}


def _reset_peak(engine) -> None:
    import torch

    if engine.backend.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()


def _memory_rows(engine) -> list[dict]:
    import torch

    info = engine.info()
    row = {"precision": info.precision, "params_GiB": round(info.memory_bytes / 2**30, 2)}
    if engine.backend.device.type == "cuda":
        row.update(peak_allocated_GiB=round(torch.cuda.max_memory_allocated() / 2**30, 2),
                   peak_reserved_GiB=round(torch.cuda.max_memory_reserved() / 2**30, 2))
    return [row, {"precision": "bnb int8 / nf4", "status": "not measured at 11B: the demo section covers bitsandbytes' CUDA path"}]


def _stage_rows(engine, sync, repeats: int) -> list[dict]:
    from guardedge.bench import stages

    obj = stages.request_dict(stages.noise_png(IMAGE))
    parsed = engine.parse(obj)
    prepared = engine.prepare(parsed)
    out = {"parse": stages.timed(lambda: engine.parse(obj), 1, 5), "preprocess": stages.timed(lambda: engine.prepare(parsed), 1, 5)}
    out.update(stages.model_stages(engine, prepared, 2, repeats, set(), sync))
    return [{"stage": k, **_ms(v)} for k, v in out.items()]


def _switch_rows(clock, context) -> dict:
    from guardedge.bench.gpu_switches import measure_switches

    return measure_switches(context["engine"], clock, sync_for(context), setting(context, "repeats"),
                            setting(context, "compile_backend"))


def preprocess(clock, context) -> dict:
    import torch
    from PIL import Image

    from guardedge.bench import stages

    try:  # runtime/pixels.py (the fast tiling path) may not be in this tree yet
        from guardedge.runtime.pixels import compact, config_from_processor, write_canvas
    except ImportError as exc:
        return {"status": "skipped", "reason": f"not available: {exc}"}
    processor = context["engine"].pre.image_processor
    config, why = config_from_processor(processor)
    if config is None:
        return {"status": "skipped", "reason": f"not available for this processor: {why}"}
    image = Image.open(__import__("io").BytesIO(stages.noise_png(IMAGE))).convert("RGB")
    reference = torch.as_tensor(processor(images=[[image]], return_tensors="pt")["pixel_values"][0, 0])
    device = context["engine"].backend.device
    out = torch.empty_like(reference, device=device)

    def gpu():
        small = compact(image, config)
        write_canvas(torch.from_numpy(small.pixels).to(device, non_blocking=True), small.grid, config, out)

    rows = [{"path": "transformers MllamaImageProcessor (CPU)", **_ms(stages.timed(lambda: processor(images=[[image]], return_tensors="pt"), 1, 5))},
            {"path": f"pixels.compact (CPU) + write_canvas ({device.type})", **_ms(stages.timed(gpu, 2, 10, sync_for(context)))}]
    rows[1]["max_abs_diff"] = float((out.cpu() - reference).abs().max())
    return {"tables": {"4-tile image to pixel_values": rows}}


def _ms(summary: dict) -> dict:
    return {k: summary[k] for k in ("n", "p50_ms", "p95_ms", "cpu_p50_ms") if k in summary}


SECTION_RUNNERS = {"env": env, "demo": demo, "fullsize": fullsize, "switches": _switch_rows, "preprocess": preprocess}

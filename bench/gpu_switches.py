"""The ``switches`` section of ``guardedge bench gpu-check``: each fast path off and on, side by side.

On the 11B random-weight engine (one 4-tile request): the vision encoder with eager vs SDPA
attention over its 6,432 tokens, the vision encoder plain vs ``torch.compile``d, and the category
decode plain vs ``torch.compile``d (runtime/backends/fastpaths.py). Each row gives p50/p95 off and
on, their ratio, the first call's time when on (compilation), and how far the outputs moved
(vision: max |Δ| of the states; decode: whether the tokens are the same). Every switch is turned
back off after its row, so the rows are independent. Cheapest first: a compile that overruns
the budget is stopped by gpu-check's watchdog with the earlier rows already written.
"""

from __future__ import annotations

import copy
import time

from guardedge.bench import stages

WARMUP = 2


def measure_switches(engine, clock, sync, repeats: int = 10, compile_backend: str = "inductor") -> dict:
    import torch

    backend = engine.backend
    obj = stages.request_dict(stages.noise_png((1120, 1120)))
    batch = engine.pre.collate([engine.prepare(engine.parse(obj)).encoded])

    def vision():
        with torch.inference_mode():
            return backend.arch.torch_vision(backend.model, batch, backend.device, backend.dtype)

    rows = []
    for name, run in (("vision_attention eager -> sdpa", _attention_row), ("compile_decode", _decode_row),
                      ("compile_vision", _compile_vision_row)):
        if clock.left() < 30:
            rows.append({"switch": name, "status": "cut", "detail": "section time cap reached"})
            continue
        try:
            rows.append({"switch": name, "status": "ok", **run(engine, vision, batch, _Timer(sync, repeats, compile_backend))})
        except Exception as exc:  # noqa: BLE001 - one switch's failure is its row
            rows.append({"switch": name, "status": "error", "detail": f"{type(exc).__name__}: {exc}"[:300]})
        finally:
            _all_off(backend)
    return {"notes": ["one 4-tile request, bf16; off = transformers' default path"], "tables": {"off vs on": rows}}


def _all_off(backend) -> None:
    from guardedge.runtime.backends.fastpaths import set_vision_attention

    vision, text = backend.arch.torch_vision_encoder(backend.model), backend.arch.torch_text_model(backend.model)
    set_vision_attention(vision, "sdpa")
    for module in (vision, text):
        module.__dict__.pop("forward", None)  # the class's own forward again


def _compare(off: dict, on: dict, first_call_s: float | None = None) -> dict:
    row = {"off_p50_ms": off["p50_ms"], "off_p95_ms": off["p95_ms"], "on_p50_ms": on["p50_ms"], "on_p95_ms": on["p95_ms"],
           "on/off p50": round(on["p50_ms"] / off["p50_ms"], 3)}
    if first_call_s is not None:
        row["first_call_s"] = round(first_call_s, 2)
    return row


class _Timer:
    def __init__(self, sync, repeats: int, compile_backend: str):
        self.sync, self.repeats, self.compile_backend = sync, repeats, compile_backend

    def __call__(self, fn) -> dict:
        return stages.timed(fn, WARMUP, self.repeats, self.sync)

    def first(self, fn) -> float:
        """The first call's seconds: compilation, when a switch compiles."""
        t0 = time.perf_counter()
        fn()
        self.sync()
        return time.perf_counter() - t0


def _attention_row(engine, vision, batch, timer) -> dict:
    from guardedge.runtime.backends.fastpaths import set_vision_attention

    encoder = engine.backend.arch.torch_vision_encoder(engine.backend.model)
    set_vision_attention(encoder, "eager")
    eager, eager_out = timer(vision), vision()
    set_vision_attention(encoder, "sdpa")
    sdpa, sdpa_out = timer(vision), vision()
    return {**_compare(eager, sdpa), "max_abs_diff": float((eager_out - sdpa_out).abs().max())}


def _compile_vision_row(engine, vision, batch, timer) -> dict:
    from guardedge.runtime.backends.fastpaths import FastPaths, apply_fast_paths

    off, off_out = timer(vision), vision()
    apply_fast_paths(engine.backend, FastPaths(compile_vision=True, compile_backend=timer.compile_backend))
    first = timer.first(vision)
    on, on_out = timer(vision), vision()
    return {**_compare(off, on, first), "max_abs_diff": float((off_out - on_out).abs().max())}


def _decode_row(engine, vision, batch, timer) -> dict:
    import torch

    from guardedge.runtime.backends.fastpaths import FastPaths, apply_fast_paths

    backend, spec = engine.backend, engine.family.scoring
    _, state = backend.prefill(batch, engine.prefill_draft)

    def decode():
        return backend.decode(copy.deepcopy(state), [0], [engine.unsafe_id], spec.max_new_tokens, engine.stop_ids, engine.drafter)

    with torch.inference_mode():
        off, off_tokens = timer(decode), decode()
        apply_fast_paths(backend, FastPaths(compile_decode=True, compile_backend=timer.compile_backend))
        first = timer.first(decode)
        on, on_tokens = timer(decode), decode()
    return {**_compare(off, on, first), "same_tokens": off_tokens == on_tokens}

"""Engine vs the model card's transformers snippet, same inputs, same process.

The snippet is the model family's published transformers usage (a module registered for the family,
or for the family on one architecture, under pyproject.toml's ``guardedge.references`` entry point,
:func:`side_for`): for LlavaGuard,
its model card's ``generate`` of the full JSON with the policy prompt (bench/reference_llavaguard.py,
greedy), against the engine's verdict-only answer (and, timed too, the engine writing the
rationale as well). For Llama Guard 3 Vision it is Meta's card code, unchanged but for the model directory:
``AutoProcessor`` + ``MllamaForConditionalGeneration`` (bf16, ``device_map="auto"``) +
``apply_chat_template`` + ``generate(max_new_tokens=20)``, one request at a time. It runs as
published (bf16, the reference for the speedup) and in fp32 (the engine's CPU dtype, so the
table separates what the dtype buys from what one-pass scoring buys). The engine is also timed
with format drafts off (runtime/decoding.py): what the drafted decode adds. All sides are warmed up,
then timed interleaved over several rounds; the report gives per-request p50/p90, speedups
against the published snippet and whether verdicts agree. Human table first, one JSON line last.
Absolute times only mean something on the machine named in the first line.

    guardedge bench reference --model demo [--rounds 5] [--plot reference.png]
    guardedge bench reference --model demo-llavaguard [--rounds 5]
    python -m guardedge.bench.reference --model demo [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import time

from guardedge.runtime.images import decode_image


def load_snippet(model_dir: str, dtype=None):
    """The card's processor and model; ``dtype`` defaults to the card's bfloat16."""
    import torch
    from transformers import AutoProcessor, MllamaForConditionalGeneration

    from transformers.utils import logging as hf_logging

    dtype = torch.bfloat16 if dtype is None else dtype
    # transformers 4.57.x warns about a "Mistral regex" for every locally saved Llama 3 tokenizer;
    # the engine loads the same tokenizer unchanged (fix_mistral_regex=False), so it is noise here.
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        processor = AutoProcessor.from_pretrained(model_dir)
        model = MllamaForConditionalGeneration.from_pretrained(model_dir, dtype=dtype, device_map="auto")
    finally:
        hf_logging.set_verbosity(verbosity)
    return processor, model


def snippet_answer(processor, model, case: dict, image) -> str:
    """The model card's code path for one request; returns the decoded answer."""
    conversation = [{"role": m["role"], "content": [
        {"type": "image"} if p["type"] == "image" else {"type": "text", "text": p["text"]} for p in m["content"]]}
        for m in case["messages"]]
    kwargs = {k: case[k] for k in ("categories", "excluded_category_keys") if k in case}
    input_prompt = processor.apply_chat_template(conversation, return_tensors="pt", **kwargs)
    inputs = processor(text=input_prompt, images=image, return_tensors="pt").to(model.device)
    prompt_len = len(inputs["input_ids"][0])
    output = model.generate(**inputs, max_new_tokens=20, pad_token_id=0)
    return processor.decode(output[:, prompt_len:][0])


def verdict_key(v) -> tuple[str, tuple[str, ...]]:
    """What "same verdict" compares: the verdict and the category codes."""
    return v.verdict, tuple(v.categories)


def snippet_verdicts(engine, snippet, cases: list[dict], requests: list) -> list[tuple[str, tuple[str, ...]]]:
    """The snippet's answers, read by the engine's family parser so both sides mean the same."""
    processor, model = snippet
    out = []
    for case, request in zip(cases, requests):
        answer = snippet_answer(processor, model, case, decode_image(request.image).image if request.image else None)
        out.append(verdict_key(engine.family.parse(answer, request)))
    return out


def _stats(times: list[float]) -> dict:
    ms = sorted(t * 1000 for t in times)
    p90 = ms[math.ceil(0.9 * len(ms)) - 1]  # nearest rank: never below the median, even for few samples
    return {"p50_ms": round(statistics.median(ms), 2), "p90_ms": round(p90, 2)}


def side_for(family: str, model_type: str | None = None):
    """The card-usage module (entry point ``guardedge.references``) of a family's checkpoints on
    ``model_type``: cases(), snippets(path, engine) -> {name: answer(case, request)}, REFERENCE,
    LABELS. The most specific name wins: ``<family>.<model_type>`` (a family whose checkpoints on
    another architecture have a model card of their own: QwenGuard is llavaguard on qwen2_5_vl),
    then ``<family>``."""
    from importlib.metadata import entry_points

    from guardedge.runtime.errors import ModelLoadError

    points = {p.name: p for p in entry_points(group="guardedge.references")}
    names = [f"{family}.{model_type}", family] if model_type else [family]
    point = next((points[name] for name in names if name in points), None)
    if point is None:
        raise ModelLoadError(f"bench reference knows no model-card usage for the {family} family")
    return point.load()


def card_device(engine) -> str:
    """Where a card side loads its model: the engine's device, so both sides run on the same
    hardware. On a GPU machine the engine takes the GPU; the QwenGuard and Llama Guard 4 cards put
    their model there too, while the LlavaGuard and ShieldGemma 2 cards' own code would leave it on
    the CPU."""
    return str(getattr(engine.backend, "device", "cpu"))


REFERENCE = "snippet_bf16"  # Llama Guard: the card's code as published
LABELS = {"snippet_bf16": "model card snippet (bf16, as published)", "snippet_fp32": "model card snippet (fp32)"}


def cases() -> list[dict]:
    from guardedge.runtime.families import get_family

    return get_family("llama-guard-3-vision").smoke_requests()


def snippets(path: str, engine) -> dict:
    """Llama Guard: the card's snippet as published (bf16) and in the engine's fp32."""
    import torch

    loaded = {"snippet_bf16": load_snippet(path, torch.bfloat16), "snippet_fp32": load_snippet(path, torch.float32)}

    def side(snippet):
        return lambda case, request: snippet_answer(*snippet, case, decode_image(request.image).image if request.image else None)

    return {name: side(snippet) for name, snippet in loaded.items()}


def engine_labels(n: int, rationale: bool, prefix: bool = False) -> dict[str, str]:
    labels = {"engine_no_drafts": "guardedge engine, drafts off, one at a time",
              "engine_no_scores": "guardedge engine, scores off, one at a time"}  # <= 50: the table's column
    if prefix:
        labels["engine_no_prefix"] = "guardedge engine, prefix cache off, one at a time"
    labels |= {"engine": "guardedge engine, one at a time", "engine_batched": f"guardedge engine, batch of {n}"}
    if rationale:
        labels["engine_rationale"] = "guardedge engine, with rationale, one at a time"
    return labels


def compare(model: str, rounds: int = 5) -> dict:
    """Time the family's published transformers usage against the engine, interleaved, same inputs."""
    import torch

    from guardedge.runtime.engine import EngineOptions, load_engine
    from guardedge.runtime.models import resolve_model as resolve

    path = str(resolve(model).path)
    engine = load_engine(path, EngineOptions(max_batch_size=8, progress=False))
    # The same engine with format drafts off: what the drafted decode buys, measured in the same run.
    plain = load_engine(path, EngineOptions(max_batch_size=8, progress=False, drafts=False))
    # ... and without per-category scores: what they cost, measured in the same run.
    unscored = load_engine(path, EngineOptions(max_batch_size=8, progress=False, category_scores=False))
    side = side_for(engine.family.name, engine.model_dir.config.get("model_type"))
    snippets_ = side.snippets(path, engine)
    # A side may also time what bounds any one-pass answer (``floors``: e.g. the card's processor
    # and a single forward of its model, no answer): timed with the rest, not compared.
    floors = side.floors(path, engine) if hasattr(side, "floors") else {}
    cases_ = side.cases()
    requests = [engine.parse(c) for c in cases_]
    # A family whose answer carries a rationale: the engine writing it too (what the snippet writes).
    full = [engine.parse({**c, "rationale": True}) for c in cases_] if engine.family.scoring.max_rationale_tokens else []
    # Warm-up, and the verdicts compared (and the scores, for a side that reads them: ShieldGemma 2's P(Yes)).
    answers = {name: [fn(c, r) for c, r in zip(cases_, requests)] for name, fn in snippets_.items()}
    ref = {name: [_read_verdict(side, engine, a, r) for a, r in zip(got, requests)] for name, got in answers.items()}
    verdicts = engine.classify(requests)
    ours = [verdict_key(v) for v in verdicts]
    if [verdict_key(v) for v in plain.classify(requests)] != ours:
        raise RuntimeError("drafted and plain greedy decoding disagree; runtime/decoding.py is broken")
    engines = [("engine_no_drafts", plain, requests), ("engine_no_scores", unscored, requests)]
    if getattr(engine.backend, "prefixes", None) is not None:
        # An engine that keeps the policy's KV cache between requests (runtime/backends/prefix_cache.py;
        # warm from the warm-up, as in a serving process): what that buys, measured in the same run.
        engines.append(("engine_no_prefix", load_engine(path, EngineOptions(max_batch_size=8, progress=False, prefix_cache=0)), requests))
    engines += [("engine", engine, requests)] + ([("engine_rationale", engine, full)] if full else [])
    if full:
        engine.classify(full)
    for fn in floors.values():  # warm-up
        for c, r in zip(cases_, requests):
            fn(c, r)
    times = _timed({**snippets_, **floors}, engines, engine, cases_, requests, rounds)
    stats = {name: _stats(t) for name, t in times.items()}
    reference = stats[side.REFERENCE]["p50_ms"]
    groups = _groups(side, cases_, times)
    return {
        "machine": f"{platform.machine()} {platform.processor() or ''} {torch.get_num_threads()} threads".strip(),
        "torch": torch.__version__, "model": path, "family": engine.family.name, "requests": len(cases_),
        "rounds": rounds, "reference": side.REFERENCE, "timings": stats,
        "speedup": {name: round(reference / s["p50_ms"], 2) for name, s in stats.items()},
        "verdicts_agree": {name: sum(a == b for a, b in zip(r, ours)) for name, r in ref.items()},
        **_score_differences(side, answers, verdicts),
        "engine_backend": engine.backend.description,
        "labels": {**side.LABELS, **engine_labels(len(cases_), bool(full), prefix="engine_no_prefix" in times)},
        **({"groups": groups} if groups else {}),
    }


def _read_verdict(side, engine, answer, request) -> tuple[str, tuple[str, ...]]:
    """The snippet's verdict: the side reads its own answers (``verdict``) or the family parses the text."""
    read = getattr(side, "verdict", None)
    return read(answer, request, engine) if read else verdict_key(engine.family.parse(answer, request))


def _score_differences(side, answers: dict, verdicts: list) -> dict:
    """For a side whose answers carry scores (``scores(answer) -> {code: p}``): the largest |difference|
    from the engine's ``category_scores`` over every code of every request, per snippet."""
    read = getattr(side, "scores", None)
    if read is None:
        return {}
    out = {}
    for name, got in answers.items():
        diffs = [abs(p - dict(v.category_scores)[code]) for a, v in zip(got, verdicts) for code, p in read(a).items()]
        out[name] = max(diffs)
    return {"max_score_difference": out}


def _groups(side, cases_: list, times: dict[str, list[float]]) -> dict:
    """Per-request stats and speedups per group of cases, when the family's side names groups
    (``GROUPS``: name -> value of ``side.image_count(case)``; e.g. Llama Guard 4's 1 and 3 images)."""
    out = {}
    for group, value in getattr(side, "GROUPS", {}).items():
        members = {i for i, case in enumerate(cases_) if side.image_count(case) == value}
        stats = {name: _stats([t for k, t in enumerate(ts) if k % len(cases_) in members])
                 for name, ts in times.items() if name != "engine_batched" and members}
        if stats:
            reference = stats[side.REFERENCE]["p50_ms"]
            out[group] = {"requests": len(members), "timings": stats,
                          "speedup": {name: round(reference / st["p50_ms"], 2) for name, st in stats.items()}}
    return out


def _timed(snippets_: dict, engines: list, engine, cases_: list, requests: list, rounds: int) -> dict[str, list[float]]:
    """Per-request seconds of every side, interleaved so drift in machine load hits every side alike."""
    times: dict[str, list[float]] = {name: [] for name in [*snippets_, *(e[0] for e in engines), "engine_batched"]}
    for _ in range(rounds):
        for i, (case, request) in enumerate(zip(cases_, requests)):
            for name, fn in snippets_.items():
                start = time.perf_counter()
                fn(case, request)
                times[name].append(time.perf_counter() - start)
            for name, eng, reqs in engines:
                start = time.perf_counter()
                eng.classify([reqs[i]])
                times[name].append(time.perf_counter() - start)
        start = time.perf_counter()
        engine.classify(requests)
        times["engine_batched"].append((time.perf_counter() - start) / len(requests))
    return times


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="demo")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--plot", help="write a PNG of the timings here (needs matplotlib: pip install 'guardedge[bench]')")


def main(args: argparse.Namespace | None = None) -> int:
    if args is None:
        parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
        configure_parser(parser)
        args = parser.parse_args()
    report = compare(args.model, args.rounds)
    print(f"{report['machine']}, torch {report['torch']}, {report['family']}: {report['requests']} requests x {report['rounds']} rounds")
    print(f"{'':50}{'p50 ms/req':>11}{'p90 ms/req':>11}{'speedup':>9}")
    labels = report["labels"]
    for name, label in labels.items():
        s = report["timings"][name]
        print(f"{label:50}{s['p50_ms']:11.2f}{s['p90_ms']:11.2f}{report['speedup'][name]:8.2f}x")
    for group, g in report.get("groups", {}).items():
        print(f"{group} ({g['requests']} requests): " + ", ".join(
            f"{name} {g['timings'][name]['p50_ms']:.1f} ms ({g['speedup'][name]:.2f}x)" for name in g["timings"]))
    for name, agree in report["verdicts_agree"].items():
        print(f"verdicts agree with {name}: {agree}/{report['requests']}")
    for name, diff in report.get("max_score_difference", {}).items():
        print(f"largest |score difference| from {name}: {diff:.2e}")
    if args.plot:
        from guardedge.bench import plots

        plots.reference(report, labels, args.plot)
        print(f"plot: {args.plot}")
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    main()

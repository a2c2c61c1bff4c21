"""Accuracy drift of candidates (exports, quantizations, other checkpoints) against a baseline model,
with a CI gate. Runs every model on the same data, compares verdicts and P(unsafe) with the
baseline's and, when the data is labelled, scores each model against the labels.

    guardedge bench drift --baseline DIR --candidate OUT_ONNX --candidate OUT_NF4 \\
        --data eval.jsonl --out drift-report --gate "agreement>=0.995,f1_delta>=-0.005"
    guardedge bench drift --baseline demo --candidate demo --data demo --limit 24 --out /tmp/r
    guardedge bench drift --baseline demo-llavaguard --candidate OUT_NF4 --data demo --out /tmp/r

The data is read in the baseline's family (requests as classify checks them, labels in its codes:
LlavaGuard's ``{"rating": "Unsafe", "category": "O2"}`` too); ``--data demo`` is that family's
demo set, ``--data demo:calibration`` / ``demo:evaluation`` its two disjoint sets for checking a
quantized guard (bench/evaldata.py).
The baseline runs in fp16 on a GPU and fp32 on CPU (an artifact runs as its manifest says).
Predictions are cached per model in OUT/cache/<key>.jsonl (key: model identity, dtype, device,
libraries, the engine's source, data), so a re-run or a second candidate never re-runs the baseline. Writes
report.md, report.json and PNG plots; prints a human table, then one JSON line (the summary).
Exit status: 0 pass, 1 a candidate fails the gate, 2 bad arguments, gate or data.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

from guardedge.bench.drift_report import _variant, table_rows
from guardedge.bench.evaldata import EvalData, EvalDataError, Prediction, load
from guardedge.runtime.artifact import engine_source_digest, source_digest
from guardedge.runtime.models import aliases

CACHE_FORMAT = "guardedge-drift-cache/1"


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--baseline", required=True, help="model directory, artifact or 'demo'")
    parser.add_argument("--candidate", action="append", required=True, help="model directory or artifact (repeatable)")
    parser.add_argument("--data", required=True, help="evaluation JSONL (docs/bench.md), 'demo', 'demo:calibration' or 'demo:evaluation'")
    parser.add_argument("--out", required=True, help="report directory (created; holds the prediction cache)")
    parser.add_argument("--gate", help="e.g. 'agreement>=0.995,f1_delta>=-0.005': exit 1 if a candidate fails")
    parser.add_argument("--limit", type=int, help="evaluate the first N examples only")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--batch-size", type=int, default=8)


def main(args) -> int:
    from guardedge.bench.metrics import GateError, parse_gate  # numpy: only when the command runs
    from guardedge.runtime.errors import ModelLoadError

    try:
        conditions = parse_gate(args.gate) if args.gate else []
        if args.limit is not None and args.limit < 1 or args.batch_size < 1:
            raise ValueError("--limit and --batch-size must be at least 1")
        for model in [args.baseline, *args.candidate]:  # before minutes of baseline work, not after
            if model not in aliases() and not Path(model).is_dir():
                raise ValueError(f"model {model!r} is not an alias ({', '.join(aliases())}) or an existing directory")
        data = load(args.data, args.limit, baseline_family(args.baseline))
        if not data.labelled and any(c.needs_labels for c in conditions):
            raise ValueError(f"the gate names label metrics but {args.data} is not fully labelled")
    except (GateError, EvalDataError, ValueError, ModelLoadError) as exc:
        print(f"guardedge bench drift: {exc}", file=sys.stderr)
        return 2
    device = _device(args.device)
    out = Path(args.out)
    (out / "cache").mkdir(parents=True, exist_ok=True)
    baseline = run_model(args.baseline, data, device, out / "cache", args.batch_size)
    candidates = [run_model(c, data, device, out / "cache", args.batch_size) for c in args.candidate]
    report = build_report(data, baseline, candidates, conditions, args.gate)
    from guardedge.bench.drift_report import write_report

    report["files"] = write_report(out, report, data, baseline, candidates)
    print(human_table(report))
    print(json.dumps(summary(report, out)))
    return 0 if report["passed"] else 1


def baseline_family(model: str) -> str:
    """The guard family of the baseline (its manifest's, else its model type's): the data's requests
    and labels are read in that family's shape and codes, and ``--data demo`` is its demo set."""
    from guardedge.runtime.families import choose_family
    from guardedge.runtime.models import resolve_model

    return choose_family(resolve_model(model, progress=False)).name


def _device(choice: str) -> str:
    if choice != "auto":
        return choice
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


# -- running, with a cache ------------------------------------------------------------------------


def model_identity(path: Path) -> dict:
    """What the weights are: the manifest's file hashes, or the top-level files' sizes and mtimes."""
    from guardedge.runtime.artifact import read_manifest

    manifest = read_manifest(path)
    if manifest is not None:
        return {"backend": manifest["backend"], "precision": manifest["precision"], "files": manifest["files"]}
    files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
    return {"backend": "torch", "files": {p.name: [p.stat().st_size, p.stat().st_mtime_ns] for p in files}}


def cache_key(identity: dict, dtype: str | None, device: str, data: EvalData) -> str:
    from guardedge.runtime.artifact import library_versions

    blob = {"format": CACHE_FORMAT, "model": identity, "dtype": dtype, "device": device, "data": data.sha256,
            "libraries": library_versions(), "engine": engine_source_digest(),
            "bench": source_digest("guardedge.bench")}  # request building and classification live here too
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:20]


def run_model(model: str, data: EvalData, device: str, cache_dir: Path, batch_size: int) -> dict:
    """{"model", "info", "predictions", "cached"}: predictions from the cache, else from the engine."""
    from guardedge.runtime.models import resolve_model as resolve

    path = resolve(model, progress=False).path
    identity = model_identity(path)
    # An ONNX export has one precision (its manifest's); the dtype option would only be refused.
    dtype = None if identity["backend"] == "onnxruntime" else ("float16" if device == "cuda" else "float32")
    cache = cache_dir / f"{cache_key(identity, dtype, device, data)}.jsonl"
    cached = read_cache(cache, [e.id for e in data.examples])
    if cached is not None:
        print(f"{model}: cached predictions ({cache})", file=sys.stderr)
        return {"model": model, "info": cached[0], "predictions": cached[1], "cached": True, "cache": str(cache)}
    info, predictions = classify(str(path), data, device, dtype, batch_size)
    write_cache(cache, info, predictions)
    return {"model": model, "info": info, "predictions": predictions, "cached": False, "cache": str(cache)}


def classify(path: str, data: EvalData, device: str, dtype: str | None, batch_size: int) -> tuple[dict, list[Prediction]]:
    from tqdm import tqdm

    from guardedge.runtime.engine import EngineOptions, load_engine

    engine = load_engine(path, EngineOptions(device=device, dtype=dtype, max_batch_size=batch_size, progress=False))
    i = engine.info()
    info = {"name": i.name, "path": path, "backend": i.backend, "precision": i.precision, "device": i.device}
    predictions = []
    examples = data.examples
    with tqdm(total=len(examples), desc=f"{i.name} ({i.variant})", unit="ex", file=sys.stderr, mininterval=1) as bar:
        for start in range(0, len(examples), batch_size):
            chunk = examples[start : start + batch_size]
            verdicts = engine.classify([e.request for e in chunk])
            predictions.extend(Prediction.from_verdict(e.id, v) for e, v in zip(chunk, verdicts))
            bar.update(len(chunk))
    return info, predictions


def read_cache(path: Path, ids: list[str]) -> tuple[dict, list[Prediction]] | None:
    """The cached (info, predictions), or None if missing, damaged or for other examples."""
    try:
        lines = path.read_text().splitlines()
        header = json.loads(lines[0])
        predictions = [Prediction.from_json(json.loads(line)) for line in lines[1:]]
    except (OSError, IndexError, KeyError, TypeError, json.JSONDecodeError):
        return None
    if header.get("format") != CACHE_FORMAT or [p.id for p in predictions] != ids:
        return None
    return header["info"], predictions


def write_cache(path: Path, info: dict, predictions: list[Prediction]) -> None:
    tmp = path.with_suffix(".tmp")  # written whole, then renamed: an interrupted run leaves no half cache
    lines = [json.dumps({"format": CACHE_FORMAT, "info": info})] + [json.dumps(p.to_json()) for p in predictions]
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(path)


# -- comparing ------------------------------------------------------------------------------------


def build_report(data: EvalData, baseline: dict, candidates: list[dict], conditions, gate: str | None) -> dict:
    from guardedge.bench.metrics import agreement, breakdown, check_gate, gate_values, label_metrics

    examples = data.examples
    base_metrics = label_metrics(examples, baseline["predictions"]) if data.labelled else None
    entries = []
    for number, cand in enumerate(candidates, 1):
        drift = agreement(baseline["predictions"], cand["predictions"])
        drift["breakdown"] = breakdown(examples, baseline["predictions"], cand["predictions"])
        metrics = label_metrics(examples, cand["predictions"]) if data.labelled else None
        values = gate_values(drift, metrics, base_metrics)
        failures = check_gate(conditions, values)
        entries.append({"label": f"candidate {number}: {cand['info']['name']}", "model": cand["model"], "info": cand["info"],
                        "cached": cand["cached"], "drift": drift, "metrics": metrics,
                        "deltas": {k: v for k, v in values.items() if k.endswith("_delta")} if metrics else None,
                        "gate": {"passed": not failures, "failures": failures}})
    return {
        "data": {"source": data.source, "n": len(examples), "labelled": data.labelled, "sha256": data.sha256,
                 "tasks": {t: sum(e.task == t for e in examples) for t in ("prompt", "response")}},
        "baseline": {"model": baseline["model"], "info": baseline["info"], "cached": baseline["cached"], "metrics": base_metrics},
        "candidates": entries,
        "gate": {"expression": gate, "conditions": [str(c) for c in conditions]},
        "passed": all(e["gate"]["passed"] for e in entries),
    }


def human_table(report: dict) -> str:
    rows = table_rows(report)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [f"drift on {report['data']['source']} ({report['data']['n']} examples)"]
    lines += ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    for c in report["candidates"]:
        lines += margin_lines(c)
    for c in report["candidates"]:
        lines += [f"GATE FAIL {c['label']} ({c['model']}): {failure}" for failure in c["gate"]["failures"]]
    return "\n".join(lines)


def margin_lines(c: dict, most: int = 12) -> list[str]:
    """Agreement per baseline margin bucket, then the verdict flips nearest the boundary first."""
    d = c["drift"]
    buckets = ", ".join(f"{b} {g['verdicts_equal']}/{g['requests']}" for b, g in d["by_margin"].items() if g["requests"])
    out = [f"{c['label']}: verdicts equal by baseline margin |P(unsafe)-0.5|: {buckets}"]
    flips = sorted((f for f in d["flips"] if f["kind"] != "categories"), key=lambda f: f["margin"])
    out += [f"  flip {f['id']}: {f['kind']}, P(unsafe) {f['baseline']['p_unsafe']:.4f} (margin {f['margin']:.4f}) -> "
            f"{f['candidate']['p_unsafe']:.4f}" for f in flips[:most]]
    if len(flips) > most:
        out.append(f"  ... {len(flips) - most} more flips in report.md")
    return out


def summary(report: dict, out: Path) -> dict:
    def brief(c: dict) -> dict:
        keys = ("agreement", "agreement_lower", "agreement_upper", "kappa", "verdict_flips", "mean_abs_delta_p",
                "p50_abs_delta_p", "p99_abs_delta_p", "max_abs_delta_p")
        return {"model": c["model"], "variant": _variant(c["info"]), **{k: c["drift"][k] for k in keys},
                "deltas": c["deltas"], "gate_passed": c["gate"]["passed"], "failures": c["gate"]["failures"]}

    return {"bench": "drift", "data": report["data"]["source"], "n": report["data"]["n"],
            "baseline": {"model": report["baseline"]["model"], "variant": _variant(report["baseline"]["info"])},
            "candidates": [brief(c) for c in report["candidates"]], "passed": report["passed"], "report": str(out / "report.json")}

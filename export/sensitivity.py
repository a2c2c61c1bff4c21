"""``guardedge export sensitivity``: which part of the model a quantization's damage comes from.

    guardedge export sensitivity --model demo --data demo:calibration --bits 4
    guardedge export sensitivity --model demo --data eval.jsonl --backend onnx --bits 8 --out /tmp/sens
    guardedge export sensitivity --model /models/Llama-Guard-3-11B-Vision --data mine.jsonl --groups head,vision,mlp

Quantizes one module group at a time (the architecture plug-in's ``quant_groups``: each text
layer's attention or cross-attention and MLP, the vision tower, the projector, the head) and
reports, against the fp32 model on the same backend, how far it moves P(unsafe) (|ΔP| mean, p99,
max) and how many verdicts it flips on the data (with agreement's Wilson 95 % interval), as a table,
``sensitivity.png`` and ``report.json`` (``--out``), then one JSON line.

Bounded work: (groups + 1) × examples classifications, refused above ``--max-work`` before any
model is loaded (narrow with ``--groups`` or ``--limit``); the time is estimated from the reference
pass and printed before the groups run. Each trial's answers are cached (export/trials.py), so a
rerun is instant. Backends: ``bnb`` (in place on the source; ``--bits 8|4``), ``onnx`` (an fp32 ONNX
export of the model, ``--from-onnx`` or exported once into the cache; ``--bits 8`` is weight-only
int8, ``--method int8-dynamic`` the dynamic recipe, ``--bits 4`` int4).
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import logging
import sys
from pathlib import Path

from guardedge.export.common import progress_logging
from guardedge.export.sweep import MAX_WORK, check_work, sweep
from guardedge.export.trials import DEFAULT_CACHE
from guardedge.runtime.errors import GuardError

log = logging.getLogger(__name__)
def select(groups: list, pattern: str | None) -> list:
    """Groups whose name or kind matches one of the comma-separated ``pattern`` terms (globs allowed)."""
    if not pattern:
        return list(groups)
    terms = [t.strip() for t in pattern.split(",") if t.strip()]
    chosen = [g for g in groups if any(fnmatch.fnmatch(g.name, t) or g.kind == t for t in terms)]
    if not chosen:
        raise GuardError(f"--groups {pattern!r} matches no group; groups: {', '.join(g.name for g in groups)}")
    return chosen


def make_trials(args, src):
    """The trial runner the arguments ask for (bnb in place, or ONNX on an fp32 export)."""
    from guardedge.export.trials import BnbTrials, OnnxTrials

    cache = None if args.no_cache else Path(args.cache)
    if args.backend == "bnb":
        return BnbTrials(src, args.bits, head_rows=args.head_rows, device=args.device, cache_dir=cache)
    from guardedge.export.onnx_export import _float_artifact
    from guardedge.export.onnx_specs import spec_for

    method = args.method or ("int8" if args.bits == 8 else "int4")
    components = tuple(c for c in args.components.split(",") if c)
    unknown = set(components) - set(spec_for(src.config).components)
    if unknown or not components:
        raise GuardError(f"--components {args.components!r}: choose from {', '.join(spec_for(src.config).components)}")
    float_dir = _float_artifact(Path(args.from_onnx), src) if args.from_onnx else float_onnx(src, Path(args.cache))
    return OnnxTrials(src, float_dir, method, args.block_size, components,
                      tuple(k for k in args.keep_float.split(",") if k), args.head_rows, args.device, cache)


def float_onnx(src, cache: Path) -> Path:
    """An fp32 ONNX export of ``src``, made once per source into the cache (at 11B: ~43 GB of disk and RAM)."""
    from guardedge.export.onnx_export import Recipe, export
    from guardedge.runtime.artifact import source_identity

    out = cache / f"onnx-fp32-{source_identity(src.path, src.name)['sha256'][:16]}"
    if not (out / "manifest.json").is_file():
        print(f"exporting an fp32 ONNX copy of {src.name} to {out} (once; pass --from-onnx to use your own)", file=sys.stderr)
        export(str(src.path), out, Recipe(agreement_n=0), force=True)
    return out


def group_params(src, groups: list) -> dict[str, int]:
    """Parameters of each group's Linear weights (weightless model: cheap at any size)."""
    import torch
    from transformers import AutoConfig

    from guardedge.export.footprint import is_skipped, meta_model

    model = meta_model(AutoConfig.from_pretrained(str(src.path), local_files_only=True))
    linears = [(n, m.weight.numel()) for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    return {g.name: sum(k for n, k in linears if is_skipped(n, list(g.modules))) for g in groups}


# -- output ------------------------------------------------------------------------------------------

def table(rows: list[dict]) -> str:
    header = ["group", "kind", "params", "flips", "agree", "95% lower", "mean|dP|", "p99|dP|", "max|dP|"]
    body = [[r["group"], r["kind"], f"{r['params']:,}", str(r["verdict_flips"]), f"{r['agreement']:.4f}",
             f"{r['agreement_lower']:.4f}", f"{r['mean_abs_delta_p']:.5f}", f"{r['p99_abs_delta_p']:.5f}",
             f"{r['max_abs_delta_p']:.5f}"] for r in rows]
    widths = [max(len(x[i]) for x in [header, *body]) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in [header, *body])


def plot(rows: list[dict], path: Path, title: str) -> str:
    from guardedge.bench.plots import pyplot

    plt = pyplot()
    kinds = sorted({r["kind"] for r in rows})
    colours = {k: plt.get_cmap("tab10")(i) for i, k in enumerate(kinds)}
    fig, ax = plt.subplots(figsize=(7, max(3.0, 0.28 * len(rows) + 1.2)))
    ys = range(len(rows))
    ax.barh(ys, [r["p99_abs_delta_p"] for r in rows], color=[colours[r["kind"]] for r in rows], alpha=0.85)
    ax.scatter([r["max_abs_delta_p"] for r in rows], ys, marker="|", color="black", s=60, label="max |ΔP|")
    for y, r in zip(ys, rows):
        if r["verdict_flips"]:
            ax.annotate(f"{r['verdict_flips']} flip{'s' * (r['verdict_flips'] > 1)}", (r["max_abs_delta_p"], y),
                        xytext=(4, -3), textcoords="offset points", fontsize=7, color="red")
    ax.set_yticks(list(ys), [r["group"] for r in rows], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("p99 |ΔP(unsafe)| (bar) and max (tick), quantizing that group alone", fontsize=8)
    ax.set_title(title, fontsize=9)
    handles = [plt.Rectangle((0, 0), 1, 1, color=colours[k]) for k in kinds]
    ax.set_xlim(0, max([r["max_abs_delta_p"] for r in rows] + [1e-6]) * 1.25)  # room for the flip labels
    ax.legend(handles + ax.get_legend_handles_labels()[0], kinds + ["max |ΔP|"], fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


# -- command line ------------------------------------------------------------------------------------

def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="demo", help="'demo', 'demo-llavaguard' or a local 16-bit model directory")
    parser.add_argument("--data", required=True, help="JSONL as bench drift reads it, or demo, demo:calibration, demo:evaluation")
    parser.add_argument("--bits", type=int, choices=[8, 4], default=8)
    parser.add_argument("--backend", choices=["bnb", "onnx"], default="bnb")
    parser.add_argument("--method", choices=["int8", "int8-dynamic", "int4"], help="onnx: the quantization (default by --bits)")
    parser.add_argument("--from-onnx", help="onnx: an fp32 ONNX export of --model (default: exported once into --cache)")
    parser.add_argument("--components", default="decoder", help="onnx: components quantized (comma-separated)")
    parser.add_argument("--keep-float", default="", help="onnx: weight/node name parts always kept float")
    parser.add_argument("--block-size", type=int, default=32, help="onnx int8/int4 block size")
    parser.add_argument("--head-rows", action=argparse.BooleanOptionalAction, default=True,
                        help="quantizing the head keeps the verdict and category rows float (the exports' default)")
    parser.add_argument("--groups", help="only these groups: names or kinds, comma-separated, globs allowed (e.g. head,text.*.mlp)")
    parser.add_argument("--limit", type=int, help="the first N examples of --data only")
    parser.add_argument("--max-work", type=int, default=MAX_WORK, help=f"most classifications allowed (default {MAX_WORK})")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, help="write report.json and sensitivity.png here")
    parser.add_argument("--cache", default=str(DEFAULT_CACHE), help="trial cache directory")
    parser.add_argument("--no-cache", action="store_true", help="neither read nor write the trial cache")
    parser.add_argument("--quiet", action="store_true", help="no progress output")


def main(args: argparse.Namespace) -> int:
    from guardedge.export import checkdata
    from guardedge.runtime.families import choose_family
    from guardedge.runtime.models import resolve_model as resolve

    if not args.quiet:
        progress_logging()
    src = resolve(args.model, progress=not args.quiet)
    if src.manifest is not None:
        raise GuardError(f"{src.path} is already an export; measure the original 16-bit model")
    if args.backend == "bnb" and args.method:
        raise GuardError("--method is for --backend onnx; bitsandbytes takes --bits")
    family = choose_family(src)
    data = checkdata.load(args.data, args.limit, family.name)
    trials = make_trials(args, src)
    try:
        groups = select(trials.candidates, args.groups)
        work = check_work(len(groups), len(data.examples), args.max_work)
        if not args.quiet:
            print(f"{len(groups)} groups x {len(data.examples)} examples of {data.source} = {work} classifications "
                  f"(+ the reference), {trials.backend} {json.dumps(trials.recipe())}", file=sys.stderr)
        _, rows = sweep(trials, data, groups, args.quiet)
    finally:
        trials.close()
    params = group_params(src, groups)
    rows = [{**r, "params": params[r["group"]]} for r in rows]
    report = {"model": src.name, "source": str(src.path), "data": {"source": data.source, "n": len(data.examples),
              "sha256": data.sha256}, "recipe": trials.recipe(), "skipped": trials.fixed, "groups": rows}
    print(table(rows))
    for name, why in trials.fixed.items():
        print(f"not a candidate: {name}: {why}")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        title = f"sensitivity: {src.name}, {trials.backend} {trials.recipe().get('bits') or trials.recipe().get('method')}, {data.source} (n={len(data.examples)})"
        report["plot"] = plot(rows, args.out / "sensitivity.png", title)
        (args.out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({"sensitivity": [{k: r[k] for k in ("group", "kind", "verdict_flips", "p99_abs_delta_p", "max_abs_delta_p")}
                                      for r in rows], "data": report["data"], "recipe": report["recipe"]}))
    return 0

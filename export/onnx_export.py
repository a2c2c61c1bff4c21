"""``guardedge export onnx``: the guard as ONNX components for ONNX Runtime, validated before it is kept.

    guardedge export onnx --model demo --out /models/guard-onnx
    guardedge export onnx --model /models/Llama-Guard-3-11B-Vision --out OUT --quantize int4 --block-size 32

OUT holds the components of the model's architecture, chosen by its ``model_type`` from the
registry export/onnx_specs.py — Mllama: ``vision.onnx`` + ``decoder.onnx`` (export/onnx_configs.py);
LLaVA-OneVision: ``vision.onnx`` + ``embed.onnx`` + ``decoder.onnx`` (export/onnx_llava_onevision.py) —
each with its weights in ``<file>_data``, the source's config/tokenizer/processor/chat-template
files, and ``manifest.json`` (backend "onnxruntime", family, architecture, components), so ``load_engine(OUT)`` and
``guardedge classify --model OUT`` work. Stages (logged): [1] load the source once (fp16: cast
while loading) and export each component with optimum's ``export_pytorch``, weights streamed to
external data; [2] quantize the chosen components (int8 dynamic / int4 MatMulNBits); [3] validate
against PyTorch; [4] hash and write the manifest, then move OUT.partial to OUT.

Validation: fp32 must match PyTorch (max |Δlogit| <= --tolerance, same first tokens and decoded
answers) or the export FAILS (exit 1, no manifest; the files stay in OUT.partial to inspect).
fp16/int8/int4 record agreement with the fp32 PyTorch source (verdicts, |ΔP(unsafe)|) instead.
Choices and measurements: docs/decisions/0004-onnx-export.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Literal

from guardedge.export import agreement, keep_auto
from guardedge.export.common import check_out, free, progress_logging
from guardedge.export.keep_auto import AutoSpec
from guardedge.export.onnx_specs import onnx_backend_class
from guardedge.runtime.errors import GuardError

log = logging.getLogger(__name__)

DEFAULT_QUANTIZED = ("decoder",)  # the vision tower stays float, as TGI/SGLang keep it (REFERENCE.md §5)
# Mllama's cross_attn.o_proj is the image's way in (matches nothing elsewhere). The output layer is
# quantized with the verdict and category rows kept float beside it (head_rows, decision 0012).
DEFAULT_KEEP = ("cross_attn.o_proj",)
DEFAULT_BLOCK = 32
SIDE_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
              "preprocessor_config.json", "processor_config.json", "chat_template.json", "chat_template.jinja",
              "generation_config.json", "config.json", "LICENSE", "LICENSE.txt", "USE_POLICY.md", "NOTICE")
_REFERENCE: dict[tuple, list] = {}  # (source sha256, n) -> fp32 PyTorch answers, reused within a process


@dataclass(frozen=True)
class Recipe:
    """Every option of an ONNX export, as recorded in the manifest."""

    dtype: Literal["fp32", "fp16"] = "fp32"
    quantize: Literal["none", "int8", "int8-dynamic", "int4"] = "none"
    block_size: int = DEFAULT_BLOCK  # int8 / int4 (weight-only blocks)
    quantize_components: tuple[str, ...] = DEFAULT_QUANTIZED
    keep_float: tuple[str, ...] = DEFAULT_KEEP  # weight/node name parts kept float
    keep_groups: tuple[str, ...] = ()  # module groups kept float (architecture quant_groups; --keep)
    head_rows: bool = True  # a quantized head keeps the verdict and category rows float (decision 0012)
    opset: int = 18
    tolerance: float = 1e-3  # fp32: max |Δlogit| vs PyTorch
    agreement_n: int = 64  # held-out requests beyond the demo samples

    @property
    def precision(self) -> str:
        return self.quantize if self.quantize != "none" else self.dtype

    def check(self, components: tuple[str, ...]) -> None:
        unknown = set(self.quantize_components) - set(components)
        if unknown:
            raise GuardError(f"--quantize-components: {sorted(unknown)} are not components; choose from {', '.join(components)}")
        if self.quantize in ("int8", "int4") and (self.block_size < 16 or self.block_size & (self.block_size - 1)):
            raise GuardError(f"--block-size must be a power of two >= 16 (MatMulNBits); got {self.block_size}")
        if self.quantize != "none" and self.dtype != "fp32":
            raise GuardError("--quantize int8/int4 starts from fp32 weights; leave --dtype at fp32")


# -- stage 1: export --------------------------------------------------------------------------------

def export_float(src: Path, out: Path, recipe: Recipe, spec) -> None:
    """Load the source once and write each of ``spec``'s components (+ _data) into ``out``."""
    import torch
    import transformers
    from optimum.exporters.onnx.convert import export_pytorch

    from guardedge.export.onnx_files import externalize, streaming_external_data

    dtype = torch.float16 if recipe.dtype == "fp16" else torch.float32
    model = getattr(transformers, spec.transformers_class).from_pretrained(
        str(src), local_files_only=True, use_safetensors=True, dtype=dtype)
    model.eval()
    spec.prepare(model)
    for name, (wrapper, config) in spec.components.items():
        log.info("[1/4] exporting %s.onnx (%s)", name, recipe.dtype)
        path = out / f"{name}.onnx"
        with streaming_external_data(), torch.no_grad():
            export_pytorch(wrapper(model), config(model.config, float_dtype=recipe.dtype), recipe.opset, path)
        externalize(path)
    del model
    free()


def copy_side_files(src: Path, out: Path) -> None:
    for name in SIDE_FILES:
        if (src / name).is_file():
            shutil.copy2(src / name, out / name)


def copy_float_components(float_dir: Path, out: Path, names: tuple[str, ...]) -> None:
    for name in names:
        for f in (f"{name}.onnx", f"{name}.onnx_data"):
            shutil.copy2(float_dir / f, out / f)


# -- stage 2: quantize ------------------------------------------------------------------------------

def quantize_components(out: Path, recipe: Recipe, groups, head_ids: list[int]) -> dict:
    """Quantize the recipe's components in ``out``: every weight MatMul but the ``keep_float`` ones
    and those of the ``keep_groups`` (export/onnx_groups.py); returns the nodes kept float per component."""
    import onnx

    from guardedge.export.onnx_groups import group_patterns, matching_nodes, quantize

    unknown = set(recipe.keep_groups) - {g.name for g in groups}
    if unknown:
        raise GuardError(f"--keep {', '.join(sorted(unknown))}: not module groups of this model "
                         f"(see guardedge export sensitivity; e.g. {', '.join(g.name for g in groups[:3])})")
    kept = {}
    for name in recipe.quantize_components:
        log.info("[2/4] quantizing %s.onnx to %s", name, recipe.quantize)
        path = out / f"{name}.onnx"
        graph = onnx.load(str(path), load_external_data=False)
        by_group = group_patterns(groups, name)
        patterns = [*recipe.keep_float, *(p for g in recipe.keep_groups for p in by_group.get(g, ()))]
        head = head_node(graph, groups, name)
        rows = {"node": head, "ids": head_ids} if recipe.head_rows and head else None
        kept[name] = quantize(path, recipe.quantize, recipe.block_size, matching_nodes(graph, patterns), head_rows=rows)["kept_float_nodes"]
    return kept


def head_node(graph, groups, component: str) -> str | None:
    """The output layer's MatMul in this component's graph (the architecture's ``head`` group), if there."""
    from guardedge.export.onnx_groups import group_patterns, matching_nodes

    patterns = [p for g in groups if g.kind == "head" for p in group_patterns([g], component).get(g.name, ())]
    found = matching_nodes(graph, patterns) if patterns else []
    return found[0] if found else None


# -- stage 3: validate ------------------------------------------------------------------------------

def validate(src, out: Path, recipe: Recipe, device: str | None, components: tuple[str, ...]) -> dict:
    """Parity (fp32, raises past tolerance) and agreement with the fp32 PyTorch source."""
    from guardedge.export import onnx_validate as val
    from guardedge.runtime.backends.torch_backend import TorchBackend
    from guardedge.runtime.families import family_for_config
    from guardedge.runtime.modeldir import ModelDir

    provisional = ModelDir(out, src.config, out.name, {"backend": "onnxruntime", "components": _components(components),
                                                       "precision": recipe.precision, "recipe": {"dtype": recipe.dtype}})
    family = family_for_config(src.config).name
    requests = val.validation_requests(recipe.agreement_n, family)
    n_fixed = len(requests) - recipe.agreement_n
    batches = val.parity_batches(n_fixed, val.smoke_count(family))
    result: dict = {}
    key = (src.path, recipe.agreement_n)
    reference = None
    # PyTorch first, then freed, then ONNX Runtime: never both copies of the weights in memory.
    if recipe.precision == "fp32" or key not in _REFERENCE:
        torch_engine = val.engine_for(src, TorchBackend.load(src.path, device="cpu", dtype="float32"))
        if recipe.precision == "fp32":
            log.info("[3/4] PyTorch reference on %d fixed requests in %d batches", n_fixed, len(batches))
            reference = val.reference_outputs(torch_engine, requests[:n_fixed], batches)
        if key not in _REFERENCE:
            log.info("[3/4] agreement set: %d requests through the fp32 PyTorch source", len(requests))
            _REFERENCE[key] = agreement.answers(torch_engine, requests)
        del torch_engine
        free()
    onnx_engine = val.engine_for(provisional, onnx_backend_class(src.config).load(provisional, device=device))
    if reference is not None:
        log.info("[3/4] parity of ONNX Runtime with the PyTorch reference")
        result["parity"] = val.parity(onnx_engine, requests[:n_fixed], batches, reference, stop_above=recipe.tolerance)
        result["parity"]["tolerance"] = recipe.tolerance
        _check_parity(result["parity"], out)
    log.info("[3/4] the same requests through the %s ONNX artifact", recipe.precision)
    got = agreement.answers(onnx_engine, requests)
    ids = [r.request_id or str(i) for i, r in enumerate(requests)]
    result["agreement"] = {"reference": "fp32 PyTorch source", **agreement.agreement(_REFERENCE[key], got, ids)}
    result["smoke"] = agreement.smoke_record(requests, got, family)
    result["footprint_bytes"] = onnx_engine.backend.memory_bytes()
    return result


def _check_parity(parity: dict, out: Path) -> None:
    problems = []
    if parity["max_abs_delta_logit"] > parity["tolerance"]:
        problems.append(f"max |Δlogit| {parity['max_abs_delta_logit']:.3g} > tolerance {parity['tolerance']:g}")
    if parity["first_tokens_equal"] != parity["rows"]:
        problems.append(f"first tokens differ on {parity['rows'] - parity['first_tokens_equal']} of {parity['rows']} rows")
    if parity["decoded_equal"] != parity["decoded_rows"]:
        problems.append(f"decoded answers differ on {parity['decoded_rows'] - parity['decoded_equal']} rows")
    if problems:
        raise GuardError(f"ONNX export FAILED validation against PyTorch: {'; '.join(problems)}. "
                         f"No manifest was written; the files are in {out} for inspection.")


# -- the export -------------------------------------------------------------------------------------

def export(model: str, out: Path, recipe: Recipe, device: str | None = "cpu", force: bool = False,
           from_onnx: Path | None = None, auto: AutoSpec | None = None) -> dict:
    """Export ``model`` ("demo" or a directory) into ``out``; returns the manifest.

    ``from_onnx``: an fp32 ONNX artifact of the same source whose components are quantized
    instead of exporting again (what the tests and a sweep over recipes use)."""
    from guardedge.runtime.artifact import library_versions, source_identity, write_manifest
    from guardedge.runtime.families import family_for_config
    from guardedge.export.onnx_specs import spec_for
    from guardedge.runtime.models import resolve_model as resolve

    keep_auto.check_spec(auto, bool(recipe.keep_groups))
    if auto is not None and recipe.quantize == "none":
        raise GuardError("--keep auto chooses what a quantized export keeps float: give --quantize int8|int8-dynamic|int4")
    src = resolve(model, progress=log.isEnabledFor(logging.INFO))
    spec = spec_for(src.config)
    names = tuple(spec.components)
    recipe.check(names)
    _check_source(src, out, force)
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    if from_onnx is not None:
        copy_float_components(_float_artifact(from_onnx, src), tmp, names)
    else:
        export_float(src.path, tmp, recipe, spec)
    copy_side_files(src.path, tmp)
    chosen = None
    if auto is not None:
        recipe, chosen = choose_kept(src, tmp, recipe, auto, device)
    kept = quantize_components(tmp, recipe, *_groups_and_head_ids(src, recipe)) if recipe.quantize != "none" else {}
    validation = validate(src, tmp, recipe, device, names)
    if chosen is not None:
        validation["keep_auto"] = _verify_auto(src, tmp, recipe, auto, chosen, device, names)
    log.info("[4/4] hashing and writing the manifest")
    manifest = write_manifest(
        tmp, family=family_for_config(src.config).name, architecture=spec.model_type, backend="onnxruntime",
        precision=recipe.precision, components=_components(names), recipe={**asdict(recipe), "kept_float_nodes": kept, "from_onnx": str(from_onnx or "")},
        source=source_identity(src.path, src.name), validation=validation,
        libraries=library_versions("onnx", "onnxruntime", "optimum", "optimum-onnx"), show_progress=log.isEnabledFor(logging.INFO))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return manifest


def choose_kept(src, float_dir: Path, recipe: Recipe, auto: AutoSpec, device: str | None) -> tuple[Recipe, dict]:
    """Search the kept groups on the calibration data with trials on copies of the fp32 components."""
    from guardedge.export.trials import OnnxTrials
    from guardedge.runtime.families import family_for_config

    calib, heldout = keep_auto.load_sets(auto, family_for_config(src.config))
    trials = OnnxTrials(src, float_dir, recipe.quantize, recipe.block_size, recipe.quantize_components, recipe.keep_float,
                        recipe.head_rows, device, auto.cache)
    result, heldout_reference = keep_auto.run(trials, auto, calib, heldout, "[1/4]", log)
    return replace(recipe, keep_groups=tuple(result["kept"])), {
        "result": result, "calib": calib, "heldout": heldout, "heldout_reference": heldout_reference, "fixed": trials.fixed}


def _verify_auto(src, tmp: Path, recipe: Recipe, auto: AutoSpec, chosen: dict, device: str | None, names: tuple) -> dict:
    """The written components on the calibration and the held-out data, against the fp32 ONNX answers."""
    from transformers import AutoConfig

    from guardedge.export import onnx_validate as val
    from guardedge.export.footprint import kept_cost, onnx_saving
    from guardedge.runtime.modeldir import ModelDir

    log.info("[3/4] --keep auto: the artifact on the calibration and the held-out data")
    provisional = ModelDir(tmp, src.config, tmp.name, {"backend": "onnxruntime", "components": _components(names),
                                                       "precision": recipe.precision, "recipe": {"dtype": recipe.dtype}})
    engine = val.engine_for(provisional, onnx_backend_class(src.config).load(provisional, device=device))
    run = lambda requests: agreement.answers(engine, requests, batch_size=16)  # noqa: E731
    conditions = auto.conditions()
    calibration = keep_auto.verify(run, chosen["calib"], chosen["result"]["reference"], conditions)
    heldout = keep_auto.verify(run, chosen["heldout"], chosen["heldout_reference"], conditions)
    del engine
    free()
    config = AutoConfig.from_pretrained(str(src.path), local_files_only=True)
    cost = kept_cost(config, chosen["result"]["kept"], onnx_saving(recipe.quantize, recipe.block_size))
    return keep_auto.record(auto, chosen["result"], calibration, heldout, chosen["fixed"], cost)


def _groups_and_head_ids(src, recipe: Recipe) -> tuple[tuple, list[int]]:
    """The architecture's module groups and, with ``head_rows``, the family's verdict/category token ids."""
    from guardedge.runtime.architectures import architecture_class

    groups = architecture_class(src.config).quant_groups(src.config)
    if not recipe.head_rows:
        return groups, []
    from transformers import AutoTokenizer

    from guardedge.runtime.backends.head_rows import head_token_ids
    from guardedge.runtime.families import family_for_config

    tokenizer = AutoTokenizer.from_pretrained(str(src.path), local_files_only=True, fix_mistral_regex=False)
    return groups, head_token_ids(tokenizer, family_for_config(src.config))


def _components(names: tuple[str, ...]) -> dict[str, str]:
    return {name: f"{name}.onnx" for name in names}


def _float_artifact(path: Path, src) -> Path:
    from guardedge.runtime.artifact import read_manifest, source_identity

    manifest = read_manifest(path)
    if manifest is None or manifest.get("backend") != "onnxruntime" or manifest.get("precision") != "fp32":
        raise GuardError(f"--from-onnx {path}: not an fp32 ONNX artifact of guardedge")
    if manifest["source"]["sha256"] != source_identity(src.path, src.name)["sha256"]:
        raise GuardError(f"--from-onnx {path} was exported from another model than --model")
    return path


def _check_source(src, out: Path, force: bool) -> None:
    if src.manifest is not None:
        raise GuardError(f"{src.path} is already an export ({src.manifest['backend']}/{src.manifest['precision']}); export the original model")
    check_out(out, force)


# -- command line -----------------------------------------------------------------------------------

def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="demo", help="'demo' or a local 16-bit model directory (Mllama or LLaVA-OneVision)")
    parser.add_argument("--out", type=Path, required=True, help="the artifact directory to write")
    parser.add_argument("--dtype", choices=["fp32", "fp16"], default="fp32", help="float type of the exported weights")
    parser.add_argument("--quantize", choices=["none", "int8", "int8-dynamic", "int4"], default="none",
                        help="int8 / int4: weight-only blocks (MatMulNBits); int8-dynamic: per-channel int8 weights and "
                             "int8 activations scaled per call (quantize_dynamic)")
    parser.add_argument("--block-size", type=int, default=DEFAULT_BLOCK, help=f"int8/int4 block size (default {DEFAULT_BLOCK})")
    parser.add_argument("--head-rows", action=argparse.BooleanOptionalAction, default=True,
                        help="when the head is quantized, keep the verdict and category tokens' rows float (default on)")
    parser.add_argument("--keep", default="", help="comma-separated module groups kept float (names from "
                        "'guardedge export sensitivity'), or auto: the fewest that meet --target on --calib")
    parser.add_argument("--quantize-components", default=",".join(DEFAULT_QUANTIZED),
                        help=f"comma-separated components to quantize (default {','.join(DEFAULT_QUANTIZED)}; "
                             "Mllama has vision,decoder; LLaVA-OneVision vision,embed,decoder)")
    parser.add_argument("--keep-float", help=f"comma-separated weight-name parts kept float when quantizing ('' for none; "
                        f"default {','.join(DEFAULT_KEEP)}, none with --keep auto, which chooses what is kept)")
    parser.add_argument("--tolerance", type=float, default=1e-3, help="fp32: largest |Δlogit| vs PyTorch accepted")
    parser.add_argument("--agreement-n", type=int, default=64, help="held-out requests compared with the source")
    parser.add_argument("--opset", type=int, default=18)
    parser.add_argument("--device", default="cpu", help="where ONNX Runtime validates (cpu, cuda, auto)")
    parser.add_argument("--from-onnx", type=Path, help="quantize this fp32 ONNX artifact's components instead of exporting")
    parser.add_argument("--force", action="store_true", help="replace --out if it exists")
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    keep_auto.add_arguments(parser)


def recipe_from_args(args: argparse.Namespace) -> Recipe:
    def names(text: str) -> tuple[str, ...]:
        return tuple(n.strip() for n in text.split(",") if n.strip())

    if args.agreement_n < 0:
        raise GuardError("--agreement-n must be 0 or more")
    return Recipe(dtype=args.dtype, quantize=args.quantize, block_size=args.block_size,
                  quantize_components=names(args.quantize_components),
                  keep_float=names(args.keep_float if args.keep_float is not None else "" if args.keep == "auto" else ",".join(DEFAULT_KEEP)),
                  keep_groups=() if args.keep == "auto" else names(args.keep), head_rows=args.head_rows,
                  opset=args.opset, tolerance=args.tolerance, agreement_n=args.agreement_n)


def main(args: argparse.Namespace) -> int:
    if not args.quiet:
        progress_logging()
    manifest = export(args.model, args.out, recipe_from_args(args), args.device, args.force, args.from_onnx,
                      keep_auto.from_args(args))
    v = manifest["validation"]
    a = v["agreement"]
    if "parity" in v:
        p = v["parity"]
        print(f"{args.out}: parity with PyTorch: max |Δlogit| {p['max_abs_delta_logit']:.2e} over {p['rows']} rows "
              f"in {p['batches']} batches; first tokens equal {p['first_tokens_equal']}/{p['rows']}, "
              f"decoded answers equal {p['decoded_equal']}/{p['decoded_rows']}")
    print(f"{args.out}: {manifest['precision']}, {v['footprint_bytes'] / 1e6:.1f} MB")
    print(agreement.agreement_line(a))
    auto = v.get("keep_auto")
    if auto:
        print("\n".join(keep_auto.summary_lines(auto)))
    line = {k: v[k] for k in ("parity", "footprint_bytes") if k in v}
    line["agreement"] = {k: x for k, x in a.items() if k not in ("flips", "by_margin")}
    if auto:
        line["keep_auto"] = {"kept": auto["kept"], **{k: keep_auto.brief(auto[k]) for k in ("calibration", "heldout")}}
    print(json.dumps({"out": str(args.out), "precision": manifest["precision"], "recipe": manifest["recipe"], **line}))
    return 0 if not auto or keep_auto.ok(auto) else 1

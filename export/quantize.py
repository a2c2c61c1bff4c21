"""``guardedge export quantize``: a bitsandbytes 8-bit or 4-bit copy of a guard that loads anywhere.

    guardedge export quantize --model demo --bits 4 --out /models/guard-nf4
    guardedge export quantize --model /models/Llama-Guard-3-11B-Vision --bits 8 --out OUT --device cuda
    guardedge export quantize --model /models/LlavaGuard-v1.2-7B-OV-hf --bits 4 --out OUT --device cuda

OUT is a self-contained model directory: safetensors weights with their quantization state,
config.json with the ``quantization_config``, the tokenizer/processor/chat-template (and licence)
files of the source, and ``manifest.json`` (runtime/artifact.py). guardedge loads it directly
(``load_engine(OUT)``, ``classify``/``serve --model OUT``) and so does plain transformers +
bitsandbytes (the architecture's class, e.g. ``MllamaForConditionalGeneration.from_pretrained(OUT)``).
Any architecture plug-in (runtime/architectures) quantizes: it names the transformers class and
the modules kept in 16-bit by default.

Steps, one model in memory at a time: quantize while loading and save; classify the agreement
set (the family's smoke requests + N held-out requests in its shape, export/agreement.py) with
the source, then with OUT; record verdict agreement, |ΔP(unsafe)| and the footprint (measured on
OUT; also computed for the published checkpoints the architecture plug-in names, e.g. the 11B) in the manifest. Modules kept in 16-bit by default and why:
docs/decisions/0003-quantization-skip-modules.md.
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
from guardedge.export.agreement import held_out_requests, parsed_smoke_requests
from guardedge.export.common import check_out, free, progress_logging
from guardedge.export.footprint import (architecture, default_skip, footprint, footprint_real, is_skipped,
                                        meta_model, resolve_skip, transformers_class)
from guardedge.export.keep_auto import AutoSpec
from guardedge.runtime.errors import GuardError

log = logging.getLogger(__name__)

# Kept in 16-bit by default: the architecture plug-in's ``keep_16bit`` (runtime/architectures).
# Mllama's, measured on the demo guard (docs/decisions/0003, 0012): the projector (bitsandbytes
# 0.50's int8 matmul fails on its 5-D input) and the cross-attention output projections; its vision
# tower is quantized, and so is the output layer, with the rows P(unsafe) and the categories are read
# from kept in 16-bit beside it (``head_rows``: quantizing those rows flipped 2% of verdicts at 4-bit).
# LLaVA-OneVision's: the vision tower, the projector and the output layer (tied to the embedding).
# A pattern names a module or a dotted suffix of its path.
AGREEMENT_N = 200
# Files copied from the source beside the weights and config (the licence travels with Llama weights).
SIDE_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
              "preprocessor_config.json", "processor_config.json", "chat_template.json", "chat_template.jinja",
              "generation_config.json", "LICENSE", "LICENSE.txt", "USE_POLICY.md", "NOTICE")
_REFERENCE: dict[tuple, list] = {}  # (source sha256, n, device) -> the source's answers, per process


@dataclass(frozen=True)
class Recipe:
    """Every option of an export, as recorded in the manifest."""

    bits: Literal[8, 4]
    quant_type: Literal["nf4", "fp4"] | None = None  # 4-bit only; default nf4
    double_quant: bool | None = None  # 4-bit: quantize the block scales too (0.37 bit/param); default on
    skip_modules: tuple[str, ...] | None = None  # None: the architecture's keep_16bit (set by export)
    head_rows: bool = True  # a quantized head keeps the verdict and category rows in the storage dtype (decision 0012)
    storage_dtype: str = "bfloat16"  # of everything not quantized, as the real checkpoint
    compute_dtype: str = "bfloat16"  # 4-bit compute in config.json (guardedge uses its own dtype)
    agreement_n: int = AGREEMENT_N

    def __post_init__(self):
        if self.bits not in (8, 4):
            raise GuardError(f"bits must be 8 or 4, not {self.bits!r}")
        if self.bits == 8 and (self.double_quant or self.quant_type):
            raise GuardError("quant_type and double quantization apply to 4-bit only")
        if self.bits == 4:
            object.__setattr__(self, "quant_type", self.quant_type or "nf4")
            object.__setattr__(self, "double_quant", self.double_quant is not False)
        else:
            object.__setattr__(self, "double_quant", False)
        if self.quant_type not in (None, "nf4", "fp4"):
            raise GuardError(f"quant_type must be nf4 or fp4, not {self.quant_type!r}")

    @property
    def precision(self) -> str:
        return "bnb-int8" if self.bits == 8 else f"bnb-{self.quant_type}"

    def bnb_config(self, skip_names: list[str]):
        import torch
        from transformers import BitsAndBytesConfig

        if self.bits == 8:
            return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=skip_names)
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=self.quant_type,
                                  bnb_4bit_use_double_quant=self.double_quant, llm_int8_skip_modules=skip_names,
                                  bnb_4bit_compute_dtype=getattr(torch, self.compute_dtype))


# -- the export ----------------------------------------------------------------------------------

def quantize_to(src: Path, tmp: Path, recipe: Recipe, device: str | None) -> list[str]:
    """Quantize while loading (weights go to the device one tensor at a time) and save."""
    import torch
    from transformers import AutoConfig

    from guardedge.runtime.backends.torch_backend import choose_device, device_map_target

    config = AutoConfig.from_pretrained(str(src), local_files_only=True)
    model = meta_model(config)
    skip = resolve_skip(model, recipe.skip_modules)
    check_int8_keep(model, skip, recipe)
    dev = choose_device(device)
    model = transformers_class(config).from_pretrained(
        str(src), local_files_only=True, use_safetensors=True, dtype=getattr(torch, recipe.storage_dtype),
        quantization_config=recipe.bnb_config(skip), device_map={"": device_map_target(dev)})
    log.info("saving %s weights to %s", recipe.precision, tmp)
    model.save_pretrained(str(tmp), safe_serialization=True, max_shard_size="5GB")
    head = architecture(config).verdict_head
    head_quantized = not is_skipped(head, skip) and model.get_submodule(head).weight is not model.get_input_embeddings().weight
    del model
    free()
    for name in SIDE_FILES:
        if (src / name).is_file():
            shutil.copy2(src / name, tmp / name)
    if recipe.head_rows and head_quantized:
        save_head_rows(src, tmp, head, recipe)
    return skip


def save_head_rows(src: Path, tmp: Path, head: str, recipe: Recipe) -> None:
    """The source's output rows of the family's verdict and category tokens, in the storage dtype,
    beside the quantized weights (runtime/backends/head_rows.py reads them at load)."""
    import json

    import torch
    from safetensors import safe_open
    from transformers import AutoTokenizer

    from guardedge.runtime.backends import head_rows
    from guardedge.runtime.families import family_for_config

    config = json.loads((src / "config.json").read_text())
    family = family_for_config(config)
    ids = head_rows.head_token_ids(AutoTokenizer.from_pretrained(str(src), local_files_only=True, fix_mistral_regex=False), family)
    name = f"{head}.weight"
    for shard in sorted(src.glob("*.safetensors")):
        with safe_open(str(shard), "pt") as f:
            key = next((k for k in f.keys() if _module_key(k, config) == name), None)
            if key is not None:
                rows = f.get_slice(key)[ids].to(getattr(torch, recipe.storage_dtype))
                head_rows.save(tmp / head_rows.FILE, ids, rows)
                log.info("kept %d output rows (the verdict and category tokens) in %s", len(ids), recipe.storage_dtype)
                return
    raise GuardError(f"{src}: no {name} in its safetensors files to keep head rows from")


def _module_key(key: str, config: dict) -> str:
    """A checkpoint tensor's name as the model's module path (older checkpoints use the names the
    transformers class maps with ``_checkpoint_conversion_mapping``, e.g. ``language_model.lm_head``)."""
    import re

    import transformers

    from guardedge.runtime.architectures import architecture_class

    cls = getattr(transformers, architecture_class(config).transformers_class)
    for pattern, replacement in getattr(cls, "_checkpoint_conversion_mapping", {}).items():
        key, hits = re.subn(pattern, replacement, key)
        if hits:
            break
    return key


def check_int8_keep(model, skip: list[str], recipe: Recipe) -> None:
    """8-bit must keep what the architecture says bitsandbytes' int8 matmul cannot run (``int8_keep``:
    Mllama's projector, whose 5-D input it refuses; docs/decisions/0003)."""
    if recipe.bits != 8:
        return
    for pattern in architecture(model.config).int8_keep:
        if not all(is_skipped(n, skip) for n in resolve_skip(model, (pattern,))):
            raise GuardError(f"8-bit needs {pattern} in --skip-modules: bitsandbytes' int8 matmul cannot run it "
                             "(docs/decisions/0003)")


def agreement_requests(n: int, family: str = agreement.DEFAULT_FAMILY) -> list:
    """The family's smoke requests + ``n`` held-out requests in its shape (export/agreement.py)."""
    return parsed_smoke_requests(family) + held_out_requests(n, family)


def _engine(model: str | Path, device: str | None):
    """An engine over ``model``; an unfinished artifact (no manifest yet) loads as it will with one:
    with its head rows."""
    from guardedge.runtime.engine import EngineOptions, build_engine, load_engine
    from guardedge.runtime.modeldir import ModelDir, check

    options = EngineOptions(device=device, max_batch_size=16, progress=False)
    path = Path(model)
    if path.is_dir() and not (path / "manifest.json").is_file():
        plain = check(path, path.name)
        return build_engine(ModelDir(path, plain.config, plain.name, {"backend": "torch", "components": _components(path)}), options)
    return load_engine(str(model), options)


def answers(model: str | Path, requests: list, device: str | None, label: str) -> tuple[list, int]:
    """(verdict, categories, P(unsafe)) per request and the model's memory; the model is freed after."""
    engine = _engine(model, device)
    out = agreement.answers(engine, requests, batch_size=16, label=label)
    memory = engine.backend.memory_bytes()
    del engine
    free()
    return out, memory


def export(model: str, out: Path, recipe: Recipe, device: str | None = None, source_device: str | None = None,
           force: bool = False, auto: AutoSpec | None = None) -> dict:
    """Quantize ``model`` ("demo" or a directory) into ``out``; returns the manifest.

    ``auto``: choose the groups kept in 16-bit (export/keep_auto.py) instead of ``skip_modules``.
    Everything is written to ``OUT.partial`` first and renamed at the end, so a failed or
    interrupted export never leaves a directory that looks finished."""
    from guardedge.runtime.models import resolve_model as resolve

    from transformers import AutoConfig

    keep_auto.check_spec(auto, recipe.skip_modules is not None)
    src = resolve(model, progress=log.isEnabledFor(logging.INFO))
    _check_source(src.config, out, force)
    chosen = None
    if auto is not None:
        recipe, chosen = choose_kept(src, recipe, auto, source_device or device)
    if recipe.skip_modules is None:  # the architecture's default, recorded as such in the manifest
        recipe = replace(recipe, skip_modules=default_skip(AutoConfig.from_pretrained(str(src.path), local_files_only=True)))
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        log.info("[1/4] quantizing %s to %s (keeping %s)", src.path, recipe.precision, ", ".join(recipe.skip_modules) or "nothing")
        skip = quantize_to(src.path, tmp, recipe, device)
        validation = _validate(src, tmp, recipe, device, source_device)
        if chosen is not None:
            validation["keep_auto"] = _verify_auto(src, tmp, recipe, auto, chosen, device)
        manifest = _write_manifest(src, tmp, recipe, skip, device, validation)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return manifest


def choose_kept(src, recipe: Recipe, auto: AutoSpec, device: str | None) -> tuple[Recipe, dict]:
    """Search the kept groups on the calibration data with in-process trials (the fp32 source is
    freed before the export loads anything); the recipe then keeps them and what cannot be quantized."""
    from guardedge.export.trials import BnbTrials
    from guardedge.runtime.families import family_for_config

    calib, heldout = keep_auto.load_sets(auto, family_for_config(src.config))
    trials = BnbTrials(src, recipe.bits, recipe.head_rows, device, recipe.quant_type or "nf4", bool(recipe.double_quant),
                       auto.cache)
    result, heldout_reference = keep_auto.run(trials, auto, calib, heldout, "[0/4]", log)
    groups = {g.name: g for g in trials.groups}
    skip = tuple(m for name in [*trials.fixed, *result["kept"]] for m in groups[name].modules)
    return replace(recipe, skip_modules=skip), {"result": result, "calib": calib, "heldout": heldout,
                                                "heldout_reference": heldout_reference, "fixed": trials.fixed}


def _verify_auto(src, tmp: Path, recipe: Recipe, auto: AutoSpec, chosen: dict, device: str | None) -> dict:
    """The written artifact on the calibration and the held-out data, against the fp32 source."""
    from transformers import AutoConfig

    from guardedge.export.footprint import bnb_saving, kept_cost

    log.info("[3/4] --keep auto: the artifact on the calibration and the held-out data")
    conditions = auto.conditions()
    engine = _engine(tmp, device)
    run = lambda requests: agreement.answers(engine, requests, batch_size=16)  # noqa: E731
    calibration = keep_auto.verify(run, chosen["calib"], chosen["result"]["reference"], conditions)
    heldout = keep_auto.verify(run, chosen["heldout"], chosen["heldout_reference"], conditions)
    del engine
    free()
    config = AutoConfig.from_pretrained(str(src.path), local_files_only=True)
    cost = kept_cost(config, chosen["result"]["kept"], bnb_saving(recipe))
    return keep_auto.record(auto, chosen["result"], calibration, heldout, chosen["fixed"], cost)


def _validate(src, tmp: Path, recipe: Recipe, device: str | None, source_device: str | None) -> dict:
    """Agreement with the source on the agreement set, the smoke answers, the footprints."""
    from guardedge.runtime.artifact import source_identity
    from guardedge.runtime.families import family_for_config

    family = family_for_config(src.config).name
    requests = agreement_requests(recipe.agreement_n, family)
    log.info("[2/4] agreement set: %d requests through the source", len(requests))
    key = (source_identity(src.path, src.name)["sha256"], recipe.agreement_n, source_device or device)
    if key not in _REFERENCE:  # the source's answers do not depend on the recipe: reuse them
        _REFERENCE[key] = answers(src.path, requests, source_device or device, "source")[0]
    log.info("[3/4] the same requests through the %s model", recipe.precision)
    quantized, memory = answers(tmp, requests, device, recipe.precision)
    ids = [r.request_id or str(i) for i, r in enumerate(requests)]
    return {"agreement": agreement.agreement(_REFERENCE[key], quantized, ids), "smoke": agreement.smoke_record(requests, quantized, family),
            **_footprints(tmp, recipe, memory)}


def _write_manifest(src, tmp: Path, recipe: Recipe, skip: list[str], device: str | None, validation: dict) -> dict:
    from guardedge.runtime.artifact import library_versions, source_identity, write_manifest
    from guardedge.runtime.families import family_for_config

    log.info("[4/4] hashing and writing the manifest")
    return write_manifest(
        tmp, family=family_for_config(src.config).name, backend="torch", precision=recipe.precision,
        components=_components(tmp),
        recipe={**asdict(recipe), "skip_modules": list(recipe.skip_modules), "skip_module_names": skip,
                "device": device or "auto"},
        source=source_identity(src.path, src.name), validation=validation,
        libraries=library_versions("bitsandbytes", "accelerate"), show_progress=log.isEnabledFor(logging.INFO))


def _stored_rows(path: Path) -> int:
    if not path.is_file():
        return 0
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return f.get_slice("ids").get_shape()[0]


def _components(directory: Path) -> dict[str, str]:
    """The weights file (the shard index when sharded) and, when the head keeps float rows, their file."""
    from guardedge.runtime.backends.head_rows import FILE

    index = directory / "model.safetensors.index.json"
    shards = sorted(p.name for p in directory.glob("*.safetensors") if p.name != FILE)
    out = {"weights": index.name if index.is_file() else shards[0]}
    return {**out, "head_rows": FILE} if (directory / FILE).is_file() else out


def _check_source(config: dict, out: Path, force: bool) -> None:
    from guardedge.runtime.architectures import supported_model_types

    if config.get("model_type") not in supported_model_types():
        raise GuardError(f"export quantize supports {', '.join(supported_model_types())} models; "
                         f"this model is {config.get('model_type')!r}")
    if "quantization_config" in config:
        raise GuardError("the source is already quantized; quantize the original 16-bit model")
    check_out(out, force)


def _footprints(out: Path, recipe: Recipe, memory: int) -> dict:
    from transformers import AutoConfig

    from guardedge.runtime.backends.head_rows import FILE

    config = AutoConfig.from_pretrained(str(out), local_files_only=True)
    rows = _stored_rows(out / FILE)
    figures = {"footprint_bytes": sum(p.stat().st_size for p in out.glob("*.safetensors")),
               "loaded_memory_bytes": memory,  # at the load dtype: fp32 on CPU for the 16-bit parts
               "computed_bytes": footprint(config, recipe, head_rows=rows)["bytes"],
               # the published checkpoints of this architecture (its plug-in's real_configs), computed
               "computed_real_bytes": footprint_real(config, recipe, rows), "head_rows": rows}
    return figures


# -- command line --------------------------------------------------------------------------------

def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="demo", help="'demo' or a local 16-bit model directory")
    parser.add_argument("--bits", type=int, choices=[8, 4], required=True)
    parser.add_argument("--quant-type", choices=["nf4", "fp4"], help="4-bit data type (default nf4)")
    parser.add_argument("--double-quant", action=argparse.BooleanOptionalAction,
                        help="4-bit: quantize the block scales too (default on: 0.37 bit/param less)")
    parser.add_argument("--skip-modules", nargs="*", metavar="MODULE",
                        help="modules kept in 16-bit (default: the architecture's; Mllama: multi_modal_projector "
                             "cross_attn.o_proj, the head quantized with its verdict rows kept (--head-rows); "
                             "LLaVA-OneVision: vision_tower multi_modal_projector lm_head; none: give the flag alone)")
    parser.add_argument("--head-rows", action=argparse.BooleanOptionalAction, default=True,
                        help="when the head is quantized, keep the verdict and category tokens' rows in 16-bit (default on)")
    parser.add_argument("--keep", choices=["auto"], help="auto: choose the module groups kept in 16-bit on --calib to "
                        "meet --target (instead of --skip-modules)")
    parser.add_argument("--out", type=Path, required=True, help="the artifact directory to write")
    parser.add_argument("--device", default="auto", help="where to quantize and validate (cuda quantizes on the GPU)")
    parser.add_argument("--source-device", help="where the 16-bit source runs for the agreement check (default: --device)")
    parser.add_argument("--agreement-n", type=int, default=AGREEMENT_N, help="held-out requests compared with the source")
    keep_auto.add_arguments(parser)
    parser.add_argument("--force", action="store_true", help="replace --out if it exists")
    parser.add_argument("--quiet", action="store_true", help="no progress output")


def recipe_from_args(args: argparse.Namespace) -> Recipe:
    if args.bits == 8 and (args.quant_type or args.double_quant is not None):
        raise GuardError("--quant-type and --double-quant apply to --bits 4 only")
    if args.agreement_n < 0:
        raise GuardError("--agreement-n must be 0 or more")
    return Recipe(bits=args.bits, quant_type=args.quant_type, double_quant=args.double_quant,
                  skip_modules=None if args.skip_modules is None else tuple(args.skip_modules),
                  head_rows=args.head_rows, agreement_n=args.agreement_n)


def main(args: argparse.Namespace) -> int:
    if not args.quiet:
        progress_logging()
    manifest = export(args.model, args.out, recipe_from_args(args), args.device, args.source_device, args.force,
                      keep_auto.from_args(args))
    v = manifest["validation"]
    a = v["agreement"]
    real = ", ".join(f"{name}: {size / 1e9:.2f} GB" for name, size in v["computed_real_bytes"].items())
    full = f" (computed for {real})" if real else ""
    print(f"{args.out}: {manifest['precision']}, weights {v['footprint_bytes'] / 1e6:.1f} MB{full}")
    print(agreement.agreement_line(a))
    auto = v.get("keep_auto")
    if auto:
        print("\n".join(keep_auto.summary_lines(auto)))
    line = {**v, "smoke": len(v["smoke"]), "agreement": {k: x for k, x in a.items() if k not in ("flips", "by_margin")}}
    if auto:
        line["keep_auto"] = {"kept": auto["kept"], **{k: keep_auto.brief(auto[k]) for k in ("calibration", "heldout")}}
    print(json.dumps({"out": str(args.out), "precision": manifest["precision"], "recipe": manifest["recipe"], **line}))
    return 0 if not auto or keep_auto.ok(auto) else 1

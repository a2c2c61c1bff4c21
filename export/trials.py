"""Trials: a guard's answers with a chosen set of module groups quantized, on bitsandbytes or ONNX
Runtime, cached on disk. ``export sensitivity`` runs one trial per group; ``--keep auto`` one per
candidate recipe.

* :class:`BnbTrials` loads the fp32 source once and swaps groups in and out in place
  (export/groupquant.py: the same modules an export writes, checked equal in tests);
* :class:`OnnxTrials` quantizes the chosen groups' MatMul nodes of a copy of an fp32 ONNX
  artifact's components (export/onnx_groups.py) and runs it on ONNX Runtime.

The reference is the fp32 model on the same backend (nothing quantized). A trial's answers are
cached in ``cache_dir`` under a key of the model's identity (config + weights sha256), the data's
digest, the quantized groups, the backend's recipe (bits or method, block size, head rows, what is
always kept float), the library versions and guardedge's own sources: a rerun is instant and a
change anywhere re-measures.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Sequence

from guardedge.export.common import free
from guardedge.runtime.errors import GuardError

log = logging.getLogger(__name__)
CACHE_FORMAT = "guardedge-trial-cache/1"
DEFAULT_CACHE = Path.home() / ".cache" / "guardedge" / "trials"


class Trials:
    """What both backends share: candidates, the cache, the reference."""

    backend = ""

    def __init__(self, src, cache_dir: Path | None):
        from guardedge.runtime.architectures import architecture_class
        from guardedge.runtime.artifact import source_identity

        self.src = src
        self.arch = architecture_class(src.config)
        self.groups = self.arch.quant_groups(src.config)
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.identity = source_identity(src.path, src.name)["sha256"]
        self.candidates = list(self.groups)
        self.fixed: dict[str, str] = {}  # group -> why it is never quantized here

    def recipe(self) -> dict:
        raise NotImplementedError

    def answers(self, quantized: Sequence, data) -> list[tuple]:
        """(verdict, categories, P(unsafe)) per example of ``data`` with ``quantized`` groups quantized."""
        names = sorted(g.name for g in quantized)
        cached = self._read(names, data)
        if cached is not None:
            return cached
        out = self._run(list(quantized), [e.request for e in data.examples])
        self._write(names, data, out)
        return out

    def cached(self, quantized: Sequence, data) -> bool:
        return self._read(sorted(g.name for g in quantized), data) is not None

    def _run(self, quantized: list, requests: list) -> list[tuple]:
        raise NotImplementedError

    def close(self) -> None:
        """Free the model (and scratch files)."""

    # -- cache -------------------------------------------------------------------------------------
    def key(self, names: list[str], data) -> str:
        from guardedge.runtime.artifact import library_versions, source_digest

        blob = {"format": CACHE_FORMAT, "model": self.identity, "data": data.sha256, "groups": names,
                "recipe": self.recipe(), "libraries": library_versions("bitsandbytes", "onnxruntime", "onnx"),
                "runtime": source_digest("guardedge.runtime"), "export": source_digest("guardedge.export")}
        return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:24]

    def _path(self, names: list[str], data) -> Path | None:
        return self.cache_dir / f"{self.key(names, data)}.json" if self.cache_dir else None

    def _read(self, names: list[str], data) -> list[tuple] | None:
        path = self._path(names, data)
        try:
            blob = json.loads(path.read_text()) if path else None
        except (OSError, json.JSONDecodeError):
            return None
        if not blob or blob.get("ids") != [e.id for e in data.examples]:
            return None
        return [(v, tuple(c), p) for v, c, p in blob["answers"]]

    def _write(self, names: list[str], data, answers: list[tuple]) -> None:
        path = self._path(names, data)
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"groups": names, "recipe": self.recipe(), "ids": [e.id for e in data.examples],
                                   "answers": [[v, list(c), p] for v, c, p in answers]}))
        tmp.replace(path)


class BnbTrials(Trials):
    """Groups quantized in place on the fp32 source (bitsandbytes 8-bit or NF4/FP4 4-bit)."""

    backend = "bnb"

    def __init__(self, src, bits: int, head_rows: bool = True, device: str | None = "cpu", quant_type: str = "nf4",
                 double_quant: bool = True, cache_dir: Path | None = DEFAULT_CACHE):
        super().__init__(src, cache_dir)
        from guardedge.export.groupquant import check_bits

        from guardedge.runtime.backends.torch_backend import choose_device

        check_bits(bits)
        # Resolved ("auto" -> cpu or cuda): the cache key must not depend on how the device was named.
        self.bits, self.head_rows, self.device = bits, head_rows, choose_device(device).type
        self.quant_type, self.double_quant = (quant_type, double_quant) if bits == 4 else ("", False)
        self.engine = self.quantizer = None
        never = self.arch.int8_keep if bits == 8 else ()
        for g in self.groups:
            if any(m == k or m.endswith("." + k) for m in g.modules for k in never):
                self.fixed[g.name] = "bitsandbytes' int8 matmul cannot run it (int8_keep)"
            elif g.kind == "head" and _tied_head(src, self.arch.verdict_head):
                self.fixed[g.name] = "tied to the input embedding, which bitsandbytes never quantizes"
        self.candidates = [g for g in self.groups if g.name not in self.fixed]

    def recipe(self) -> dict:
        return {"backend": "bnb", "bits": self.bits, "quant_type": self.quant_type, "double_quant": self.double_quant,
                "head_rows": self.head_rows, "device": self.device}

    def _load(self) -> None:
        if self.engine is not None:
            return
        from guardedge.export.groupquant import BnbSpec, GroupQuantizer
        from guardedge.runtime.backends.head_rows import head_token_ids
        from guardedge.runtime.engine import EngineOptions, build_engine

        self.engine = build_engine(self.src, EngineOptions(device=self.device, dtype="float32", max_batch_size=16, progress=False))
        model = self.engine.backend.model
        ids = head_token_ids(self.engine.pre.tokenizer, self.engine.family) if self.head_rows else None
        head = self.arch.verdict_head
        self.quantizer = GroupQuantizer(model, BnbSpec(self.bits, self.quant_type or "nf4", self.double_quant), ids, head)

    def _run(self, quantized: list, requests: list) -> list[tuple]:
        from guardedge.export.agreement import answers

        self._load()
        self.quantizer.restore()
        for group in quantized:
            if group.name in self.fixed:
                raise GuardError(f"group {group.name} cannot be quantized here: {self.fixed[group.name]}")
            self.quantizer.quantize(list(group.modules))
        try:
            return answers(self.engine, requests, batch_size=16)
        finally:
            self.quantizer.restore()

    def close(self) -> None:
        self.engine = self.quantizer = None
        free()


class OnnxTrials(Trials):
    """Groups quantized in a copy of an fp32 ONNX artifact's components, run on ONNX Runtime."""

    backend = "onnx"

    def __init__(self, src, float_dir: Path, method: str, block_size: int = 32, components: tuple[str, ...] = ("decoder",),
                 keep_float: tuple[str, ...] = (), head_rows: bool = True, device: str | None = "cpu",
                 cache_dir: Path | None = DEFAULT_CACHE):
        super().__init__(src, cache_dir)
        from guardedge.export.onnx_groups import METHODS, group_patterns

        if method not in METHODS:
            raise GuardError(f"ONNX method must be one of {', '.join(METHODS)}, not {method!r}")
        self.float_dir, self.method, self.block_size = Path(float_dir), method, block_size
        self.components, self.keep_float, self.head_rows, self.device = tuple(components), tuple(keep_float), head_rows, device
        self.scratch = Path(tempfile.mkdtemp(prefix="guardedge-trials-"))
        self.head_ids: list[int] = []
        self.nodes = self._group_nodes(group_patterns)
        for g in self.groups:
            if not any(self.nodes[c].get(g.name) for c in self.components):
                self.fixed[g.name] = f"no quantizable MatMul of it in {', '.join(self.components)} (or kept float)"
        self.candidates = [g for g in self.groups if g.name not in self.fixed]

    def _group_nodes(self, group_patterns) -> dict[str, dict[str, list[str]]]:
        """component -> group -> its MatMul nodes there (minus the keep_float ones)."""
        import onnx

        from guardedge.export.onnx_groups import matching_nodes

        out = {}
        for component in self.components:
            graph = onnx.load(str(self.float_dir / f"{component}.onnx"), load_external_data=False)
            kept = set(matching_nodes(graph, self.keep_float)) if self.keep_float else set()
            out[component] = {name: [n for n in matching_nodes(graph, patterns) if n not in kept]
                              for name, patterns in group_patterns(self.groups, component).items()}
        return out

    def recipe(self) -> dict:
        return {"backend": "onnx", "method": self.method, "block_size": self.block_size, "components": list(self.components),
                "keep_float": list(self.keep_float), "head_rows": self.head_rows, "device": self.device}

    def _run(self, quantized: list, requests: list) -> list[tuple]:
        from guardedge.export import onnx_validate as val
        from guardedge.export.agreement import answers
        from guardedge.export.onnx_specs import onnx_backend_class
        from guardedge.export.onnx_groups import quantize
        from guardedge.runtime.modeldir import ModelDir

        trial = self.scratch / "trial"
        shutil.rmtree(trial, ignore_errors=True)
        shutil.copytree(self.float_dir, trial, ignore=shutil.ignore_patterns("manifest.json"))
        names = {g.name for g in quantized}
        for component in self.components if quantized else ():
            include = [n for g, nodes in self.nodes[component].items() if g in names for n in nodes]
            rows = self._head_rows(component, include)
            quantize(trial / f"{component}.onnx", self.method, self.block_size, include=include, head_rows=rows)
        manifest = {"backend": "onnxruntime", "precision": self.method if quantized else "fp32", "recipe": {"dtype": "fp32"},
                    "components": {c: f"{c}.onnx" for c in _components(self.float_dir)}}
        model_dir = ModelDir(trial, self.src.config, trial.name, manifest)
        engine = val.engine_for(model_dir, onnx_backend_class(self.src.config).load(model_dir, device=self.device))
        try:
            return answers(engine, requests, batch_size=16)
        finally:
            del engine
            free()
            shutil.rmtree(trial, ignore_errors=True)

    def _head_rows(self, component: str, include: list[str]) -> dict | None:
        heads = [n for g in self.groups if g.kind == "head" for n in self.nodes[component].get(g.name, ())]
        if not self.head_rows or not heads or heads[0] not in include:
            return None
        if not self.head_ids:
            from transformers import AutoTokenizer

            from guardedge.runtime.backends.head_rows import head_token_ids
            from guardedge.runtime.families import family_for_config

            tokenizer = AutoTokenizer.from_pretrained(str(self.src.path), local_files_only=True, fix_mistral_regex=False)
            self.head_ids = head_token_ids(tokenizer, family_for_config(self.src.config))
        return {"node": heads[0], "ids": self.head_ids}

    def close(self) -> None:
        shutil.rmtree(self.scratch, ignore_errors=True)


def _tied_head(src, head: str) -> bool:
    """Whether the output layer shares the input embedding's weight (read on a weightless model)."""
    from transformers import AutoConfig

    from guardedge.export.footprint import meta_model
    from guardedge.export.groupquant import head_is_tied

    return head_is_tied(meta_model(AutoConfig.from_pretrained(str(src.path), local_files_only=True)), head)


def _components(float_dir: Path) -> list[str]:
    """The ONNX components of an fp32 artifact directory (its manifest's, else the .onnx files)."""
    from guardedge.runtime.artifact import read_manifest

    manifest = read_manifest(float_dir)
    if manifest is not None:
        return list(manifest["components"])
    return sorted(p.stem for p in float_dir.glob("*.onnx"))

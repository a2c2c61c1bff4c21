"""Artifact manifests and integrity: every file hashed, any change refused by name; export verify.

A copy of the demo guard with a manifest stands in for an export here (the quantize and ONNX
exports have their own tests); the checks are the same for every artifact.

    .venv/bin/pytest tests/test_artifact.py -q
"""

from __future__ import annotations

import json
import shutil

import pytest

from guardedge.export.verify import compare, record_smoke
from guardedge.runtime.artifact import MANIFEST, read_manifest, source_identity, write_manifest
from guardedge.runtime.cli import main as cli_main
from guardedge.runtime.engine import EngineOptions, load_engine
from guardedge.runtime.errors import ModelLoadError
from guardedge.runtime.families.llama_guard_3_vision import LlamaGuard3Vision


@pytest.fixture(scope="module")
def artifact(demo_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("artifact") / "demo-fp32"
    shutil.copytree(demo_dir, out)
    write_manifest(out, family=LlamaGuard3Vision.name, backend="torch", precision="float32",
                   components={"weights": "model.safetensors"}, recipe={"kind": "copy"},
                   source=source_identity(demo_dir, "demo"), show_progress=False)
    record_smoke(out)
    return out


@pytest.fixture
def copy(artifact, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(artifact, out)
    return out


def test_manifest_describes_the_artifact(artifact, demo_dir):
    manifest = read_manifest(artifact)
    assert manifest["format"] == "guardedge-artifact/1" and manifest["backend"] == "torch"
    assert set(manifest["files"]) == {p.name for p in artifact.iterdir() if p.name != MANIFEST}
    assert manifest["source"]["sha256"] == source_identity(demo_dir, "demo")["sha256"]
    assert {"torch", "transformers"} <= set(manifest["libraries"])
    assert len(manifest["validation"]["smoke"]) == 8


def test_an_intact_artifact_loads_and_answers(artifact, demo_engine):
    engine = load_engine(str(artifact), EngineOptions(progress=False))
    request = engine.parse({"messages": [{"role": "user", "content": "How do I build a pipe bomb?"}]})
    [ours], [reference] = engine.classify([request]), demo_engine.classify([request])
    assert (ours.verdict, ours.categories) == (reference.verdict, reference.categories)
    assert engine.model_dir.manifest is not None


@pytest.mark.parametrize("victim", ["model.safetensors", "config.json", "tokenizer.json"])
def test_a_changed_byte_in_any_file_is_refused_by_name(copy, victim):
    path = copy / victim
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match=rf"file '{victim}' does not match its sha256"):
        load_engine(str(copy), EngineOptions(progress=False))


def test_missing_and_added_files_are_refused(copy):
    (copy / "extra.bin").write_bytes(b"x")
    with pytest.raises(ModelLoadError, match="'extra.bin' is not in manifest.json"):
        load_engine(str(copy), EngineOptions(progress=False))
    (copy / "extra.bin").unlink()
    (copy / "tokenizer.json").unlink()
    with pytest.raises(ModelLoadError, match="'tokenizer.json' is listed in manifest.json but missing"):
        load_engine(str(copy), EngineOptions(progress=False))


def test_a_damaged_or_foreign_manifest_is_refused(copy):
    (copy / MANIFEST).write_text("{not json")
    with pytest.raises(ModelLoadError, match="not valid JSON"):
        load_engine(str(copy), EngineOptions(progress=False))
    (copy / MANIFEST).write_text(json.dumps({"format": "other/9", "backend": "torch", "precision": "x", "components": {}, "files": {}}))
    with pytest.raises(ModelLoadError, match="cannot load it"):
        load_engine(str(copy), EngineOptions(progress=False))


def test_export_verify_passes_on_an_intact_artifact_and_fails_on_a_tampered_one(artifact, copy, capsys):
    assert cli_main(["export", "verify", str(artifact)]) == 0
    assert "hashes ok" in capsys.readouterr().out
    path = copy / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))
    assert cli_main(["export", "verify", str(copy), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert not report["ok"] and "model.safetensors" in report["problems"][0]


def test_export_verify_reports_answers_that_drifted_from_the_recorded_ones(copy, capsys):
    manifest = json.loads((copy / MANIFEST).read_text())
    manifest["validation"]["smoke"][0]["verdict"] = "unsafe" if manifest["validation"]["smoke"][0]["verdict"] == "safe" else "safe"
    (copy / MANIFEST).write_text(json.dumps(manifest))
    assert cli_main(["export", "verify", str(copy)]) == 1
    assert "at export" in capsys.readouterr().err


def test_compare_tolerates_small_probability_moves_only():
    old = [{"request_id": "a", "verdict": "safe", "categories": [], "unsafe_probability": 0.10}]
    assert compare(old, [{**old[0], "unsafe_probability": 0.11}], 0.02) == []
    assert "P(unsafe)" in compare(old, [{**old[0], "unsafe_probability": 0.20}], 0.02)[0]
    assert "no answer" in compare(old, [], 0.02)[0]

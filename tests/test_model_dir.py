"""Model directories: offline, safetensors only, clear errors; template-difference warnings."""

from __future__ import annotations

import json

import pytest

from guardedge.runtime.chat_template import builtin_template
from guardedge.runtime.errors import ModelLoadError
from guardedge.runtime.families import get_family
from guardedge.runtime.families.model_template import ModelTemplateFamily, PROBES, template_differences
from guardedge.runtime.modeldir import check
from guardedge.runtime.models import resolve_model as resolve


def _dir(tmp_path, files: dict[str, str | bytes]):
    for name, content in files.items():
        path = tmp_path / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return tmp_path


def test_pickle_only_weights_are_refused(tmp_path):
    d = _dir(tmp_path, {"config.json": '{"model_type": "mllama"}', "pytorch_model.bin": b"\x80\x04"})
    with pytest.raises(ModelLoadError, match="pickle"):
        check(d, "x")


@pytest.mark.parametrize("files, phrase", [
    ({}, "no config.json"),
    ({"config.json": "{oops"}, "not valid JSON"),
    ({"config.json": "{}"}, "no \\*.safetensors"),
])
def test_broken_directories_say_what_is_wrong(tmp_path, files, phrase):
    with pytest.raises(ModelLoadError, match=phrase):
        check(_dir(tmp_path, files), "x")


def test_missing_directory(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        resolve(str(tmp_path / "absent"))


def test_resolve_sets_offline(tmp_path, monkeypatch):
    import os

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    d = _dir(tmp_path, {"config.json": "{}", "model.safetensors": b""})
    resolve(str(d))
    assert os.environ["HF_HUB_OFFLINE"] == "1"


SEPT_2024 = builtin_template("llama-guard-3-vision").replace(
    "<BEGIN UNSAFE CONTENT CATEGORIES>", "<BEGIN UNSAFECONTENT CATEGORIES>")


def test_official_template_has_no_differences(tmp_path):
    d = _dir(tmp_path, {"chat_template.json": json.dumps({"chat_template": builtin_template("llama-guard-3-vision")})})
    assert template_differences(get_family("llama-guard-3-vision"), d) == []


def test_sept_2024_template_is_reported_with_the_line(tmp_path):
    d = _dir(tmp_path, {"chat_template.json": json.dumps({"chat_template": SEPT_2024})})
    diffs = template_differences(get_family("llama-guard-3-vision"), d)
    assert len(diffs) == len(PROBES)
    assert "UNSAFECONTENT" in diffs[0] and "line 5:" in diffs[0]


def test_prompt_source_model_renders_with_the_directory_template():
    family = ModelTemplateFamily(get_family("llama-guard-3-vision"), SEPT_2024)
    prompt = family.render(PROBES[0][1])
    assert "<BEGIN UNSAFECONTENT CATEGORIES>" in prompt
    assert family.parse("\n\nunsafe\nS1", PROBES[0][1]).categories == ("S1",)

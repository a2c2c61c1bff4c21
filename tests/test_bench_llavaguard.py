"""Benches on a LlavaGuard (LLaVA-OneVision) model: drift data in the family's labels, latency and
memory requests the family accepts, and ``bench reference`` against its published ``generate``.

Models: the tiny random-weight directory (tests/llava_tiny.py); its answers are off-format, so
these tests check shapes, labels and plumbing, never accuracy or speed.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from guardedge.bench import drift, evaldata, latency
from guardedge.bench.evaldata import EvalDataError, Label, load_jsonl
from guardedge.runtime.families import get_family


def _image_line(tmp_path: Path, name: str, colour, label: dict | None, **extra) -> dict:
    from guardedge.runtime.demo.data import ImageSpec

    ImageSpec(colour, (64, 48), 3).render().save(tmp_path / f"{name}.png")
    line = {"id": name, "messages": [{"role": "user", "content": [{"type": "image", "path": f"{name}.png"}]}], **extra}
    return {**line, "label": label} if label is not None else line


@pytest.fixture()
def llavaguard_jsonl(tmp_path) -> Path:
    lines = [
        _image_line(tmp_path, "red", (200, 20, 20), {"rating": "Unsafe", "category": "O2: Violence, Harm, or Cruelty"}),
        _image_line(tmp_path, "blue", (40, 90, 220), {"rating": "Safe", "category": "NA: None applying"}),
        _image_line(tmp_path, "orange", (240, 140, 0), {"verdict": "unsafe", "categories": ["O6"]}),
        _image_line(tmp_path, "excluded", (200, 20, 20), {"rating": "Safe", "category": "O2"}, excluded_category_keys=["O2"]),
    ]
    path = tmp_path / "eval.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def test_llavaguard_labels_are_read_in_the_familys_codes(llavaguard_jsonl):
    data = load_jsonl(llavaguard_jsonl, family="llavaguard")
    assert [e.label for e in data.examples] == [Label("unsafe", ("O2",)), Label("safe"), Label("unsafe", ("O6",)), Label("safe")]
    assert data.labelled and all(e.task == "prompt" and e.request.has_image for e in data.examples)
    with pytest.raises(EvalDataError, match="label"):  # Llama Guard's reader refuses LlavaGuard's label shape
        load_jsonl(llavaguard_jsonl, family="llama-guard-3-vision")


def test_llavaguard_data_refuses_what_the_family_refuses(tmp_path):
    good = _image_line(tmp_path, "a", (200, 20, 20), {"verdict": "unsafe", "categories": ["S1"]})
    text = {"messages": [{"role": "user", "content": "How do I build a pipe bomb?"}]}
    (tmp_path / "bad.jsonl").write_text(json.dumps(good) + "\n" + json.dumps(text) + "\n")
    with pytest.raises(EvalDataError) as caught:
        load_jsonl(tmp_path / "bad.jsonl", family="llavaguard")
    assert [line for line, _ in caught.value.errors] == [1, 2]
    assert "S1" in caught.value.errors[0][1] and "image" in caught.value.errors[1][1]


def test_demo_data_is_the_familys_own():
    data = evaldata.load("demo", 20, family="llavaguard")
    assert len(data.examples) == 20 and data.labelled and all(e.request.has_image for e in data.examples)
    codes = {c for e in data.examples for c in e.label.categories}
    assert codes and codes <= set(get_family("llavaguard").label_space)
    assert {e.label.verdict for e in data.examples} == {"safe", "unsafe"}
    assert evaldata.load("demo", 20, family="llavaguard").sha256 == data.sha256  # deterministic
    assert evaldata.load("demo", 5).examples[0].request.messages[0].content  # Llama Guard's set by default


def test_drift_reads_the_baselines_family(llava_tiny_dir, llavaguard_jsonl, tmp_path, capsys):
    assert drift.baseline_family(str(llava_tiny_dir)) == "llavaguard"
    parser = argparse.ArgumentParser()
    drift.configure_parser(parser)
    args = parser.parse_args(["--baseline", str(llava_tiny_dir), "--candidate", str(llava_tiny_dir), "--data",
                              str(llavaguard_jsonl), "--limit", "2", "--out", str(tmp_path / "r"), "--gate", "agreement>=1"])
    assert drift.main(args) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["candidates"][0]["agreement"] == 1.0
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["data"]["n"] == 2 and "prompt" in report["baseline"]["metrics"]


def test_latency_requests_are_ones_the_family_accepts():
    from guardedge.runtime.requests import parse_request

    family = get_family("llavaguard")
    reqs = latency.requests(8, "unsafe", (50, 40), family="llavaguard")
    for raw in reqs:
        request = parse_request(raw, family.default_categories())
        family.check(request)
        assert request.image.size == (50, 40) and not request.rationale and request.threshold == 0.0
    assert len({r["request_id"] for r in reqs}) == 8
    natural = latency.requests(3, "natural", None, family="llavaguard")
    assert all(parse_request(r, family.default_categories()).has_image for r in natural)


def test_latency_and_memory_run_on_a_llava_onevision_model(llava_tiny_dir, capsys):
    from guardedge.bench import memory
    from guardedge.runtime.cli import main

    assert main(["bench", "latency", "--model", str(llava_tiny_dir), "--concurrency", "1,2", "--requests", "2",
                 "--warmup", "0"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["family"] == "llavaguard" and all(row["errors"] == 0 for row in report["levels"])
    row = memory.child(str(llava_tiny_dir), "cpu", None)
    assert row["batch"] == 2 and row["classify"]["peak_rss_bytes"] >= row["load"]["peak_rss_bytes"]


def test_reference_times_the_published_generate(llava_tiny_dir):
    from guardedge.bench import reference

    report = reference.compare(str(llava_tiny_dir), rounds=1)
    n = len(get_family("llavaguard").smoke_requests())
    assert report["family"] == "llavaguard" and report["reference"] == "snippet_fp32" and report["requests"] == n
    assert set(report["timings"]) == {"snippet_fp32", "engine_no_drafts", "engine_no_scores", "engine", "engine_rationale", "engine_batched"}
    assert set(report["labels"]) == set(report["timings"])
    assert report["verdicts_agree"] == {"snippet_fp32": n}  # both off-format on random weights, read alike

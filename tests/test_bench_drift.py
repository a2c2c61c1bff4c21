"""guardedge bench drift: metrics with known answers, the gate, the data loader, and an end-to-end
run of the demo guard against itself (twice: the second run reads the prediction cache)."""

from __future__ import annotations

import argparse
import base64
import io
import json
from pathlib import Path

import pytest

from guardedge.bench import drift
from guardedge.bench.evaldata import EvalDataError, Example, Label, Prediction, load_jsonl
from guardedge.bench.metrics import (GateError, agreement, average_precision, binary_scores, category_f1, check_gate,
                                     cohen_kappa, label_metrics, parse_gate, roc_auc)


def test_binary_scores_known_answers():
    s = binary_scores([1, 1, 1, 0, 0, 0, 0], [1, 1, 0, 1, 0, 0, 0])
    assert (s["tp"], s["fp"], s["fn"], s["tn"]) == (2, 1, 1, 3)
    assert s["precision"] == pytest.approx(2 / 3) and s["recall"] == pytest.approx(2 / 3)
    assert s["f1"] == pytest.approx(2 / 3) and s["fpr"] == pytest.approx(0.25)
    assert binary_scores([0, 0], [0, 0])["f1"] == 0.0  # no positives at all: defined as 0, not an error


def test_kappa_textbook_value():
    # Wikipedia's example: 20 yes/yes, 5 yes/no, 10 no/yes, 15 no/no -> p_o 0.7, p_e 0.5, kappa 0.4.
    a = ["unsafe"] * 25 + ["safe"] * 25
    b = ["unsafe"] * 20 + ["safe"] * 5 + ["unsafe"] * 10 + ["safe"] * 15
    assert cohen_kappa(a, b) == pytest.approx(0.4)
    assert cohen_kappa(["safe"] * 4, ["safe"] * 4) == 1.0
    assert cohen_kappa(["safe", "unsafe", "unparseable"], ["safe", "unsafe", "unparseable"]) == pytest.approx(1.0)


def test_roc_and_pr_auc_by_hand():
    labels, scores = [1, 0, 1, 0], [0.9, 0.8, 0.4, 0.1]
    assert roc_auc(labels, scores) == pytest.approx(0.75)  # 3 of 4 (positive, negative) pairs ordered
    assert average_precision(labels, scores) == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    assert roc_auc([1, 0], [0.5, 0.5]) == pytest.approx(0.5)  # a tie counts half
    assert average_precision([1, 0], [0.5, 0.5]) == pytest.approx(0.5)  # tied scores: one threshold
    assert roc_auc([1, 1], [0.2, 0.3]) is None and average_precision([0, 0], [0.2, 0.3]) is None


def test_category_f1_per_code():
    out = category_f1([{"S1"}, {"S1", "S2"}, {"S10"}], [{"S1"}, {"S1"}, {"S2"}])
    assert list(out) == ["S1", "S2", "S10", "_micro"]  # codes in numeric order
    assert out["S1"]["f1"] == 1.0 and out["S2"]["f1"] == 0.0 and out["S10"]["support"] == 1
    assert out["_micro"]["f1"] == pytest.approx(4 / 7)  # tp 2, fp 1, fn 2


def _ex(i, task, verdict, cats=()):
    return Example(str(i), task, None, Label(verdict, tuple(cats)))


def _pred(i, verdict, cats=(), p=0.5):
    return Prediction(str(i), verdict, tuple(cats), p)


def test_label_metrics_split_by_task_and_agreement():
    examples = [_ex(0, "prompt", "unsafe", ["S1"]), _ex(1, "prompt", "safe"), _ex(2, "response", "unsafe", ["S2"]), _ex(3, "response", "safe")]
    base = [_pred(0, "unsafe", ["S1"], 0.9), _pred(1, "safe", p=0.1), _pred(2, "unsafe", ["S2"], 0.8), _pred(3, "safe", p=0.2)]
    cand = [_pred(0, "unsafe", ["S3"], 0.7), _pred(1, "safe", p=0.1), _pred(2, "safe", p=0.4), _pred(3, "unparseable", p=0.3)]
    m = label_metrics(examples, cand)
    assert m["prompt"]["f1"] == 1.0 and m["response"]["recall"] == 0.0 and m["response"]["unparseable"] == 1
    assert m["categories"]["S1"]["recall"] == 0.0 and m["categories"]["S3"]["precision"] == 0.0
    d = agreement(base, cand)
    assert d["agreement"] == 0.5 and d["verdict_flips"] == 2 and d["category_changes"] == 1
    assert d["max_abs_delta_p"] == pytest.approx(0.4) and d["mean_abs_delta_p"] == pytest.approx(0.175)
    assert {f["id"]: f["kind"] for f in d["flips"]} == {"0": "categories", "2": "unsafe->safe", "3": "safe->unparseable"}


def test_gate_parser_and_checks():
    conditions = parse_gate("agreement>=0.995, f1_delta >= -0.005,max_abs_delta_p<1e-2")
    assert [str(c) for c in conditions] == ["agreement>=0.995", "f1_delta>=-0.005", "max_abs_delta_p<0.01"]
    assert check_gate(conditions, {"agreement": 1.0, "f1_delta": 0.0, "max_abs_delta_p": 0.001}) == []
    failures = check_gate(conditions, {"agreement": 0.99, "f1_delta": 0.0, "max_abs_delta_p": 0.001})
    assert failures == ["agreement=0.99 fails >=0.995"]
    assert "no value" in check_gate(parse_gate("roc_auc>0.9"), {"roc_auc": None})[0]
    for bad in ("agreement=>0.9", "accuracy>=0.9", "agreement>=", "agreement>=0.9,,kappa>0"):
        with pytest.raises(GateError):
            parse_gate(bad)


def test_loader_reports_every_malformed_line(tmp_path):
    png = io.BytesIO()
    from PIL import Image

    Image.new("RGB", (8, 8), (200, 20, 20)).save(png, "PNG")
    (tmp_path / "red.png").write_bytes(png.getvalue())
    user = {"role": "user", "content": [{"type": "text", "text": "hi"}]}
    lines = [
        json.dumps({"id": "a", "messages": [user], "label": {"verdict": "safe"}}),
        "{not json",
        json.dumps({"messages": [user], "label": {"verdict": "maybe"}}),
        "",
        json.dumps({"messages": [user], "task": "image"}),
        json.dumps({"messages": []}),
        json.dumps({"id": "a", "messages": [user]}),
        json.dumps({"messages": [user], "excluded_categories": ["S1"]}),  # a misspelled request field
        json.dumps({"messages": [{"role": "user", "content": [{"type": "image", "path": "red.png"}, {"type": "text", "text": "x"}]},
                                 {"role": "assistant", "content": "ok"}],
                    "label": {"verdict": "unsafe", "categories": ["S1"]}}),
    ]
    path = tmp_path / "eval.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(EvalDataError) as info:
        load_jsonl(path)
    errors = dict(info.value.errors)
    assert sorted(errors) == [2, 3, 5, 6, 7, 8]
    assert errors[8].startswith("invalid request: excluded_categories: is not a field here")
    assert errors[2].startswith("bad JSON") and "bad label verdict 'maybe'" in errors[3]
    assert "unknown task 'image'" in errors[5] and errors[6].startswith("invalid request: messages")
    assert "duplicate id 'a'" in errors[7] and "line 5: unknown task" in str(info.value)
    good = tmp_path / "good.jsonl"
    good.write_text(lines[0] + "\n" + lines[-1].replace("red.png", "data:") .replace('"path": "data:"',
                    f'"data": "{base64.b64encode(png.getvalue()).decode()}"') + "\n" + lines[-1] + "\n")
    data = load_jsonl(good)
    assert [(e.id, e.task) for e in data.examples] == [("a", "prompt"), ("2", "response"), ("3", "response")]
    assert data.labelled and data.examples[2].request.has_image and data.examples[2].label == Label("unsafe", ("S1",))


def test_data_identity_covers_images_named_by_path(tmp_path):
    """The drift cache is keyed on the data's sha256: an image file replaced under the same name
    must change it, or a re-run would reuse predictions for other pixels."""
    from PIL import Image

    Image.new("RGB", (32, 24), (200, 10, 10)).save(tmp_path / "img.png")
    line = json.dumps({"messages": [{"role": "user", "content": [{"type": "image", "path": "img.png"},
                                                                  {"type": "text", "text": "what is this?"}]}]})
    (tmp_path / "eval.jsonl").write_text(line + "\n")
    first = load_jsonl(tmp_path / "eval.jsonl").sha256
    assert load_jsonl(tmp_path / "eval.jsonl").sha256 == first  # stable
    Image.new("RGB", (32, 24), (10, 200, 10)).save(tmp_path / "img.png")
    assert load_jsonl(tmp_path / "eval.jsonl").sha256 != first


def test_cache_key_moves_with_the_engine_source(monkeypatch):
    """Predictions made by one engine are never read back by a changed one."""
    from guardedge.bench.evaldata import EvalData

    data = EvalData((), "x", "0" * 64)
    key = drift.cache_key({"backend": "torch"}, None, "cpu", data)
    assert drift.cache_key({"backend": "torch"}, None, "cpu", data) == key
    monkeypatch.setattr(drift, "engine_source_digest", lambda: "another engine")
    moved = drift.cache_key({"backend": "torch"}, None, "cpu", data)
    assert moved != key
    monkeypatch.setattr(drift, "source_digest", lambda package: "another bench")  # bench builds requests too
    assert drift.cache_key({"backend": "torch"}, None, "cpu", data) != moved


def test_source_digest_covers_every_source_file(tmp_path):
    """The real digest, not a stand-in: one changed byte anywhere in the tree moves it."""
    import shutil

    import guardedge.runtime as runtime
    from guardedge.runtime.artifact import tree_digest

    copy = tmp_path / "runtime"
    shutil.copytree(Path(runtime.__file__).parent, copy, ignore=shutil.ignore_patterns("__pycache__", "*.safetensors", "*.json"))
    first = tree_digest(copy)
    for edited in (copy / "engine.py", copy / "families" / "llama_guard_3_vision.py"):
        edited.write_bytes(edited.read_bytes() + b"\n")
        assert tree_digest(copy) != first
        first = tree_digest(copy)


def _run(capsys, demo_dir, out, *extra):
    parser = argparse.ArgumentParser()
    drift.configure_parser(parser)
    args = parser.parse_args(["--baseline", str(demo_dir), "--candidate", str(demo_dir), "--data", "demo",
                              "--limit", "24", "--out", str(out), *extra])
    code = drift.main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_bad_arguments_exit_2(tmp_path, capsys, demo_dir):
    assert _run(capsys, demo_dir, tmp_path / "r", "--gate", "agreement>>1")[0] == 2
    assert _run(capsys, demo_dir, tmp_path / "r", "--gate", "bogus>=1")[0] == 2
    (tmp_path / "bad.jsonl").write_text("{oops\n")
    parser = argparse.ArgumentParser()
    drift.configure_parser(parser)
    args = parser.parse_args(["--baseline", "demo", "--candidate", "demo", "--data", str(tmp_path / "bad.jsonl"), "--out", str(tmp_path / "r")])
    assert drift.main(args) == 2
    assert "line 1: bad JSON" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()  # nothing ran, nothing written


def test_end_to_end_demo_against_itself_then_cached(tmp_path, capsys, demo_dir, monkeypatch):
    out = tmp_path / "report"
    code, stdout, stderr = _run(capsys, demo_dir, out, "--gate", "agreement>=0.995,f1_delta>=-0.005")
    assert code == 0
    summary = json.loads(stdout.strip().splitlines()[-1])  # the last stdout line is the JSON summary
    assert summary["passed"] and summary["candidates"][0]["agreement"] == 1.0 and summary["candidates"][0]["kappa"] == 1.0
    report = json.loads((out / "report.json").read_text())
    assert {"data", "baseline", "candidates", "gate", "passed", "files"} <= set(report)
    cand = report["candidates"][0]
    assert {"drift", "metrics", "deltas", "gate", "info"} <= set(cand) and cand["drift"]["flips"] == []
    assert report["baseline"]["info"]["precision"] == "float32" and report["data"]["n"] == 24
    assert {"prompt", "response", "categories"} <= set(report["baseline"]["metrics"])
    for name in ("report.md", "flips.png", "category_f1.png", "scatter_candidate1.png", "delta_candidate1.png"):
        assert (out / name).stat().st_size > 0
    assert "Wilson 95 % interval 0.8620-1.0000" in (out / "report.md").read_text()  # 24 of 24 equal
    assert len(list((out / "cache").glob("*.jsonl"))) == 1  # same model, same key: the candidate reused it
    assert "cached predictions" in stderr  # ... within the first run already

    def no_model(*args, **kwargs):
        raise AssertionError("the second run must not load a model")

    monkeypatch.setattr(drift, "classify", no_model)
    code, stdout, stderr = _run(capsys, demo_dir, out, "--gate", "kappa<0.5")
    assert code == 1 and stderr.count("cached predictions") == 2
    assert "GATE FAIL candidate 1" in stdout and "kappa=1 fails <0.5" in stdout
    assert json.loads(stdout.strip().splitlines()[-1])["candidates"][0]["failures"] == ["kappa=1 fails <0.5"]
    assert _run(capsys, demo_dir, out, "--gate", "agreement>=1")[0] == 0


def test_a_missing_model_directory_exits_two_before_any_work(tmp_path, capsys):
    from guardedge.runtime.cli import main
    from guardedge.runtime.models import aliases

    rc = main(["bench", "drift", "--baseline", "demo", "--candidate", str(tmp_path / "nope"), "--data", "demo",
               "--limit", "2", "--out", str(tmp_path / "out")])
    # Every installed demo is an alias (runtime/demos.py), so the list follows the plug-ins.
    assert rc == 2 and f"nope' is not an alias ({', '.join(aliases())}) or an existing directory" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_agreement_interval_margins_and_breakdown():
    """A flip near the boundary reads as one, by margin, label and category; and the gate can use the lower bound."""
    from guardedge.bench.metrics import breakdown, gate_values

    examples = [_ex(0, "prompt", "unsafe", ["S1"]), _ex(1, "prompt", "safe"), _ex(2, "prompt", "unsafe", ["S2"])]
    base = [_pred(0, "unsafe", ["S1"], 0.53), _pred(1, "safe", p=0.02), _pred(2, "unsafe", ["S2"], 0.97)]
    cand = [_pred(0, "safe", p=0.47), _pred(1, "safe", p=0.03), _pred(2, "unsafe", ["S2"], 0.96)]
    d = agreement(base, cand)
    assert d["agreement_lower"] == pytest.approx(0.2077, abs=1e-4) and d["agreement_upper"] == pytest.approx(0.9385, abs=1e-4)
    assert d["by_margin"]["0.00-0.05"] == {**d["by_margin"]["0.00-0.05"], "requests": 1, "verdicts_equal": 0}
    assert d["flips"][0]["margin"] == pytest.approx(0.03) and d["p99_abs_delta_p"] == pytest.approx(0.01 + 0.05 * 0.98)  # rank 1.98 of [0.01, 0.01, 0.06]
    b = breakdown(examples, base, cand)
    assert b["source"] == "labels" and b["by_label"]["unsafe"]["verdicts_equal"] == 1 and b["by_label"]["safe"]["agreement"] == 1.0
    assert list(b["by_category"]) == ["S1", "S2", "none"] and b["by_category"]["S1"]["agreement"] == 0.0
    unlabelled = breakdown([Example(str(i), "prompt", None) for i in range(3)], base, cand)
    assert unlabelled["source"] == "baseline" and "baseline unsafe" in unlabelled["by_label"]
    values = gate_values(d, None, None)
    assert check_gate(parse_gate("agreement_lower>=0.2,p99_abs_delta_p<=0.05"), values) == ["p99_abs_delta_p=0.059 fails <=0.05"]

"""Quantization you can check (issue 21): in-process trials equal the real export, head rows keep the
verdict logits float, the trial cache, ``export sensitivity`` and the ``--keep auto`` search.

The demo guard (tiny Mllama) runs everything on CPU with a handful of requests; the search logic is
also checked on a stand-in with known answers, so a wrong greedy step or prune fails here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

pytest.importorskip("bitsandbytes")

from guardedge.bench.evaldata import EvalData, Example  # noqa: E402
from guardedge.export import keep_auto  # noqa: E402
from guardedge.export.stats import parse_conditions  # noqa: E402
from guardedge.runtime.errors import GuardError  # noqa: E402


def _cli(argv: list[str]) -> int:
    from guardedge.runtime.cli import main

    return main(argv)


@pytest.fixture(scope="module")
def requests():
    from guardedge.export.quantize import agreement_requests

    return agreement_requests(8)  # the 8 smoke samples (text, images, policies) + 8 held-out


@pytest.mark.parametrize("bits", [8, pytest.param(4, marks=pytest.mark.slow)])  # 4-bit: make slow-check
def test_in_process_groups_answer_as_the_export_does(bits, tmp_path, demo_dir, requests):
    """The fast path keep-auto chooses with is the export's arithmetic, not an approximation."""
    if bits == 4:
        from checks import require_env

        require_env("GUARDEDGE_SLOW", "slow-check", "quantizes the demo guard to 4 bits again (~30 s)")
    from guardedge.export.agreement import answers
    from guardedge.export.groupquant import BnbSpec, GroupQuantizer
    from guardedge.export.quantize import Recipe, export
    from guardedge.runtime.engine import EngineOptions, load_engine

    export(str(demo_dir), tmp_path / "q", Recipe(bits=bits, agreement_n=0))
    artifact = answers(load_engine(str(tmp_path / "q"), EngineOptions(progress=False)), requests, 16)
    source = load_engine(str(demo_dir), EngineOptions(progress=False))
    model = source.backend.model
    kept = ("multi_modal_projector", "lm_head", "cross_attn.o_proj")  # the default recipe's
    linear = [n for n, m in model.named_modules() if type(m).__name__ == "Linear" and not any(
        n == k or n.endswith("." + k) for k in kept)]
    with GroupQuantizer(model, BnbSpec(bits)) as quantizer:
        assert quantizer.quantize(linear) == len(linear)
        in_process = answers(source, requests, 16)
    assert [a[:2] for a in in_process] == [a[:2] for a in artifact]
    assert max(abs(a[2] - b[2]) for a, b in zip(in_process, artifact)) < 1e-6
    restored = answers(source, requests, 16)
    assert max(abs(a[2] - b[2]) for a, b in zip(restored, in_process)) > 0  # the swap really changed the model


def test_head_rows_keep_the_verdict_logits_of_a_quantized_head(demo_dir, requests):
    """Quantizing only the head: with its verdict rows kept float, P(unsafe) moves far less (the
    other rows only enter the softmax's denominator)."""
    from guardedge.export.agreement import answers
    from guardedge.export.groupquant import BnbSpec, GroupQuantizer
    from guardedge.runtime.backends.head_rows import head_token_ids
    from guardedge.runtime.engine import EngineOptions, load_engine

    engine = load_engine(str(demo_dir), EngineOptions(progress=False))
    model = engine.backend.model
    ids = head_token_ids(engine.pre.tokenizer, engine.family)
    assert engine.safe_id in ids and engine.unsafe_id in ids
    with GroupQuantizer(model, BnbSpec(4)) as plain:
        plain.quantize(["lm_head"])
        quantized = answers(engine, requests, 16)
    reference = answers(engine, requests, 16)
    with GroupQuantizer(model, BnbSpec(4), head_rows=ids) as rows:
        rows.quantize(["lm_head"])
        kept = answers(engine, requests, 16)
    worst = lambda got: max(abs(a[2] - b[2]) for a, b in zip(reference, got))  # noqa: E731
    assert worst(kept) < worst(quantized) / 3, (worst(kept), worst(quantized))


# -- the search, on a stand-in with known answers -------------------------------------------------

@dataclass(frozen=True)
class _Group:
    name: str
    kind: str = "mlp"
    modules: tuple = ()


class _FakeTrials:
    """Ten examples; quantizing ``a`` flips examples 0 and 1, ``b`` flips 1, ``c`` moves P a little."""

    backend = "fake"

    def __init__(self):
        self.candidates = [_Group("a"), _Group("b"), _Group("c"), _Group("d")]
        self.runs: list[tuple] = []

    def cached(self, quantized, data) -> bool:
        return False

    def answers(self, quantized, data) -> list[tuple]:
        names = {g.name for g in quantized}
        self.runs.append(tuple(sorted(names)))
        out = []
        for i in range(10):
            p = 0.6 + 0.03 * i
            flipped = (i in (0, 1) and "a" in names) or (i == 1 and "b" in names)
            p += -0.2 if flipped else (0.01 if "c" in names else 0.0)
            out.append(("safe" if flipped else "unsafe", (), p))
        return out


def _data(n: int = 10) -> EvalData:
    return EvalData(tuple(Example(str(i), "prompt", None) for i in range(n)), "fake", "0" * 64)


def test_search_keeps_the_fewest_groups_that_meet_the_target():
    trials = _FakeTrials()
    result = keep_auto.search(trials, _data(), parse_conditions("agreement>=1"), quiet=True)
    assert result["order"][:2] == ["a", "b"]  # most flips first
    assert result["met"] and result["kept"] == ["a", "b"]
    stages = [(s["stage"], s["kept"], s["met"]) for s in result["steps"]]
    assert stages[:3] == [("greedy", [], False), ("greedy", ["a"], False), ("greedy", ["a", "b"], True)]
    assert [s for s in stages if s[0] == "prune"] == [("prune", ["a"], False), ("prune", ["b"], False)]


def test_search_prunes_a_group_the_target_does_not_need():
    trials = _FakeTrials()
    result = keep_auto.search(trials, _data(), parse_conditions("agreement>=0.9"), quiet=True)
    assert result["met"] and result["kept"] == ["a"]  # 9/10 holds with only a kept


def test_an_unreachable_target_is_reported_not_met():
    trials = _FakeTrials()
    result = keep_auto.search(trials, _data(), parse_conditions("agreement_lower>=0.99"), quiet=True)
    assert not result["met"] and len(result["kept"]) == 4  # even 10/10 has a Wilson lower bound of 0.72


class _ClosingTrials(_FakeTrials):
    closed = False

    def close(self) -> None:
        self.closed = True


def test_run_searches_then_answers_the_held_out_data_unquantized_and_closes(caplog):
    """keep_auto.run, what ``export onnx`` and ``export quantize`` both call: the caller's log and stage."""
    import logging

    trials, logger = _ClosingTrials(), logging.getLogger("guardedge.export.onnx_export")
    spec = keep_auto.AutoSpec("fake:calibration", "fake:evaluation", "agreement>=0.9")
    with caplog.at_level(logging.INFO, logger=logger.name):
        result, heldout_reference = keep_auto.run(trials, spec, _data(), _data(4), "[1/4]", logger)
    assert result["kept"] == ["a"] and trials.closed
    assert trials.runs[-1] == () and heldout_reference == _FakeTrials().answers([], _data(4))
    assert any(r.name == logger.name and r.getMessage().startswith("[1/4] --keep auto: 4 candidate groups, calibration fake")
               for r in caplog.records)


def test_run_closes_the_trials_when_the_search_fails():
    import logging

    trials = _ClosingTrials()
    trials.answers = lambda quantized, data: (_ for _ in ()).throw(RuntimeError("trial failed"))  # type: ignore[method-assign]
    spec = keep_auto.AutoSpec("fake:calibration", "fake:evaluation", "agreement>=0.9")
    with pytest.raises(RuntimeError, match="trial failed"):
        keep_auto.run(trials, spec, _data(), _data(4), "[0/4]", logging.getLogger("guardedge.export.quantize"))
    assert trials.closed


# -- the cache, the commands --------------------------------------------------------------------------

def test_trials_are_cached_by_model_data_groups_and_recipe(tmp_path, demo_dir, monkeypatch):
    from guardedge.bench.evaldata import load
    from guardedge.export.trials import BnbTrials
    from guardedge.runtime.models import resolve_model as resolve

    src = resolve(str(demo_dir), progress=False)
    data = load("demo:calibration", 4, "llama-guard-3-vision")
    trials = BnbTrials(src, 4, cache_dir=tmp_path)
    head = next(g for g in trials.candidates if g.kind == "head")
    first = trials.answers([head], data)
    monkeypatch.setattr(BnbTrials, "_run", lambda *a: pytest.fail("a cached trial ran again"))
    assert trials.answers([head], data) == first and trials.cached([head], data)
    other = BnbTrials(src, 8, cache_dir=tmp_path)  # another recipe: another key
    assert not other.cached([head], data)
    assert not trials.cached([head], load("demo:calibration", 3, "llama-guard-3-vision"))  # other data
    trials.close()


def test_sensitivity_command_table_plot_and_bounded_work(tmp_path, demo_dir, capsys):
    out, cache = tmp_path / "report", tmp_path / "cache"
    argv = ["export", "sensitivity", "--model", str(demo_dir), "--data", "demo:calibration", "--limit", "6", "--bits", "4",
            "--groups", "head,vision", "--cache", str(cache), "--out", str(out), "--quiet"]
    assert _cli(argv) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split()[:4] == ["group", "kind", "params", "flips"] and lines[1].startswith("vision")
    summary = json.loads(lines[-1])
    assert [r["group"] for r in summary["sensitivity"]] == ["vision", "head"] and summary["data"]["n"] == 6
    report = json.loads((out / "report.json").read_text())
    assert report["groups"][1]["params"] == 128256 * 64 and (out / "sensitivity.png").stat().st_size > 0
    assert _cli([*argv, "--max-work", "12"]) == 1  # (2 + 1) x 6 = 18 classifications: refused before loading
    assert "--max-work 12" in capsys.readouterr().err


def test_calibration_and_heldout_must_not_share_requests():
    from guardedge.runtime.families import get_family

    family = get_family("llama-guard-3-vision")
    with pytest.raises(GuardError, match="share 5 request"):
        keep_auto.load_sets(keep_auto.AutoSpec("demo:calibration", "demo:calibration", "agreement>=0.9", limit=5), family)
    calib, heldout = keep_auto.load_sets(keep_auto.AutoSpec("demo:calibration", "demo:evaluation", "agreement>=0.9", limit=40), family)
    assert len(calib.examples) == len(heldout.examples) == 40


@pytest.mark.slow
def test_keep_auto_export_records_both_figures_and_the_kept_cost(tmp_path, demo_dir, capsys):
    from checks import require_env

    require_env("GUARDEDGE_SLOW", "slow-check", "quantizes the demo guard once per trial (~1 min)")
    out = tmp_path / "auto"
    rc = _cli(["export", "quantize", "--model", str(demo_dir), "--bits", "8", "--keep", "auto", "--limit", "6",
               "--target", "agreement>=0.8", "--agreement-n", "0", "--cache", str(tmp_path / "c"), "--out", str(out), "--quiet"])
    assert rc == 0, capsys.readouterr()
    manifest = json.loads((out / "manifest.json").read_text())
    auto = manifest["validation"]["keep_auto"]
    assert auto["target"] == "agreement>=0.8" and auto["fixed"] == {"projector": "bitsandbytes' int8 matmul cannot run it (int8_keep)"}
    assert auto["calibration"]["source"] == "demo:calibration" and auto["heldout"]["source"] == "demo:evaluation"
    assert auto["calibration"]["sha256"] != auto["heldout"]["sha256"] and auto["heldout"]["n"] == 6
    assert not auto["calibration"]["target_failures"] and auto["steps"][0]["kept"] == []
    assert set(auto["kept_cost_bytes"]) == {"this model", "Llama Guard 3 11B Vision"}
    assert "model.multi_modal_projector" in manifest["recipe"]["skip_modules"]  # what 8-bit cannot quantize, kept
    assert "--keep auto: kept" in capsys.readouterr().out
    with pytest.raises(GuardError, match="--keep auto chooses"):
        from guardedge.export.quantize import Recipe, export

        export(str(demo_dir), tmp_path / "x", Recipe(bits=8, skip_modules=("lm_head",)),
               auto=keep_auto.AutoSpec("demo:calibration", "demo:evaluation", "agreement>=0.9"))

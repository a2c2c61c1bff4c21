"""bench.reference's statistics: nearest-rank percentiles, never below the median."""

from __future__ import annotations

import pytest

from guardedge.bench.reference import _stats


def test_percentiles_known_answers():
    assert _stats([0.010, 0.020]) == {"p50_ms": 15.0, "p90_ms": 20.0}
    assert _stats([i / 1000 for i in range(1, 41)]) == {"p50_ms": 20.5, "p90_ms": 36.0}
    assert _stats([0.005] * 5) == {"p50_ms": 5.0, "p90_ms": 5.0}


def test_reference_compare_end_to_end(demo_dir, capsys, tmp_path):
    """One round of `bench reference`: every side timed, verdicts compared, the JSON line last.
    (What it prints about speed is a benchmark's business, not a test's.)"""
    import argparse
    import json

    from guardedge.bench import reference

    plot = tmp_path / "reference.png"
    code = reference.main(argparse.Namespace(model=str(demo_dir), rounds=1, plot=str(plot)))
    lines = capsys.readouterr().out.strip().splitlines()
    report = json.loads(lines[-1])
    assert code == 0
    assert set(report["timings"]) == {"snippet_bf16", "snippet_fp32", "engine_no_drafts", "engine_no_scores", "engine", "engine_batched"}
    assert all(t["p50_ms"] > 0 for t in report["timings"].values())
    assert report["speedup"]["snippet_bf16"] == 1.0  # the reference; what the ratios mean: the test below
    assert report["verdicts_agree"] == {"snippet_bf16": 8, "snippet_fp32": 8}
    assert any("drafts off" in line for line in lines)
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_reference_speedups_measure_what_each_side_costs(demo_dir, monkeypatch, capsys):
    """Sides of known cost (sleeps of 30 and 60 ms a request): the reported ratio must be their ratio,
    so a speedup is a measurement of what ran, not an artefact of the arithmetic."""
    import time
    from types import SimpleNamespace

    from guardedge.bench import reference

    real = reference.side_for("llama-guard-3-vision")

    def snippets(path, engine):
        def sleeper(seconds):
            def answer(case, request):
                time.sleep(seconds)
                return "\n\nsafe<|eot_id|>"
            return answer
        return {"slow": sleeper(0.06), "fast": sleeper(0.03)}

    def floors(path, engine):  # timed with the rest, answers nothing, compared with nothing
        return {"floor": lambda case, request: time.sleep(0.015)}

    fake = SimpleNamespace(cases=real.cases, snippets=snippets, floors=floors, REFERENCE="fast",
                           LABELS={"slow": "60 ms", "fast": "30 ms", "floor": "15 ms, no answer"})
    monkeypatch.setattr(reference, "side_for", lambda family, model_type=None: fake)
    report = reference.compare(str(demo_dir), rounds=2)
    assert report["speedup"]["fast"] == 1.0
    assert report["speedup"]["slow"] == pytest.approx(0.5, rel=0.15)
    assert report["speedup"]["floor"] == pytest.approx(2.0, rel=0.3)
    assert report["timings"]["fast"]["p50_ms"] == pytest.approx(30, rel=0.3)
    assert set(report["verdicts_agree"]) == {"slow", "fast"}


def test_every_row_label_fits_the_tables_column():
    """`bench reference` prints labels in a 50-character column: a longer one shifts its row's numbers."""
    from importlib.metadata import entry_points

    from guardedge.bench.reference import engine_labels

    labels = dict(engine_labels(8, rationale=True, prefix=True))
    for point in entry_points(group="guardedge.references"):
        labels |= {f"{point.name}:{k}": v for k, v in point.load().LABELS.items()}
    assert len(labels) > 8
    assert {k: v for k, v in labels.items() if len(v) > 50} == {}


@pytest.mark.parametrize("side", ["reference_llavaguard", "reference_qwenguard", "reference_shieldgemma2", "reference_llama_guard_4"])
def test_card_sides_load_their_model_on_the_engines_device(side, monkeypatch):
    """On a GPU machine the engine takes the GPU; every card side must load its model there too
    (two of the cards' own snippets would leave it on the CPU, and the speedup would compare devices)."""
    import importlib
    from types import SimpleNamespace

    from guardedge.bench.reference import card_device

    module = importlib.import_module(f"guardedge.bench.{side}")
    seen = []
    monkeypatch.setattr(module, "load_snippet", lambda *args, **kwargs: seen.append(kwargs.get("device", args[-1])) or (None, None))
    engine = SimpleNamespace(backend=SimpleNamespace(device="cuda:3"))
    module.snippets("/nowhere", engine)
    if hasattr(module, "floors"):
        module.floors("/nowhere", engine)
    assert seen and set(seen) == {"cuda:3"}
    assert card_device(SimpleNamespace(backend=SimpleNamespace())) == "cpu"  # a backend without a torch device

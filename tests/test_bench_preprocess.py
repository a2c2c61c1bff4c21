"""``guardedge bench preprocess`` on a small run: every path timed, fast == transformers, the JSON line last."""

from __future__ import annotations

import argparse
import json

from guardedge.bench import preprocess


def _args(tmp_path, **over) -> argparse.Namespace:
    base = dict(sizes="96x64,300x40", image=[], format="jpeg", tile=56, max_tiles=4, repeats=2, warmup=1,
                threads=1, device="cpu", plot=None, arch="mllama")
    return argparse.Namespace(**{**base, **over})


def test_small_run_reports_every_path_and_exactness(tmp_path, capsys):
    extra = tmp_path / "extra.png"
    extra.write_bytes(preprocess.photo_like(57, 201, "png"))
    plot = tmp_path / "pre.png"
    code = preprocess.main(_args(tmp_path, image=[str(extra)], plot=str(plot)))
    lines = capsys.readouterr().out.strip().splitlines()
    report = json.loads(lines[-1])
    assert code == 0 and lines[0].startswith("bench preprocess:")
    assert [r["size"] for r in report["images"]] == ["96x64", "300x40", "57x201"]
    for row in report["images"]:
        assert row["exact"] is True and row["max_abs_diff"] == 0.0
        assert set(row["timings"]) == {"decode", "transformers", "compact", "compact+float"}
        assert all(0 < t["p50_ms"] <= t["p90_ms"] for t in row["timings"].values())
        t = row["timings"]
        assert row["speedup"]["compact+float"] == round(t["transformers"]["p50_ms"] / t["compact+float"]["p50_ms"], 2)
        assert row["queued_bytes"]["float32_tiles"] == 4 * 3 * 56 * 56 * 4
    # 96x64 needs no resize in a 2x2 grid of 56-px tiles (112x112): its compact pixels are itself, uint8.
    first = report["images"][0]
    assert first["grid"] == [2, 2] and first["queued_bytes"]["compact"] == 64 * 96 * 3
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_generated_images_decode_at_their_size():
    from guardedge.runtime.images import ImageLimits, load_image

    for fmt in ("jpeg", "png"):
        image = load_image(preprocess.photo_like(123, 45, fmt), "image", "t", ImageLimits()).image
        assert image.size == (123, 45)


def test_every_registered_architecture_runs_and_is_exact(tmp_path, capsys):
    """--arch choices come from the plug-in registry (guardedge.preprocess_benches); each one runs."""
    assert {"mllama", "llava_onevision"} <= set(preprocess.architectures())
    for arch in preprocess.architectures():
        tile = {"mllama": 56}.get(arch, 28)
        code = preprocess.main(_args(tmp_path, sizes="64x48", arch=arch, tile=tile, max_pixels=50176))
        report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert code == 0 and report["arch"] == arch and all(r["exact"] for r in report["images"]), arch

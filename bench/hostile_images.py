"""The large photo-like image the hostile-load cases send (a 4000 x 3000 JPEG, ~5.8 MB: what a
phone camera uploads), shared by the server cases (bench/hostile_load.py) and the in-process
ones (bench/hostile_engine.py)."""

from __future__ import annotations

IMAGE_SIZE = (4000, 3000)


def large_jpeg() -> bytes:
    from guardedge.bench.preprocess import photo_like

    return photo_like(*IMAGE_SIZE, "jpeg")

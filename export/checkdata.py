"""The data a quantized guard is checked on (``export sensitivity --data``, ``--keep auto --calib /
--heldout``): the same JSONL format and built-in sets as ``guardedge bench drift --data`` (a JSONL
file, ``demo``, ``demo:calibration``, ``demo:evaluation``), so one file checks both.

The loader is bench/evaldata.py's, imported lazily here: exports only reach it when they are asked
to check on data, and bench stays the one owner of the format.
"""

from __future__ import annotations

from guardedge.runtime.errors import GuardError


def load(source: str, limit: int | None, family: str):
    """``source`` as EvalData in ``family``'s shape; a malformed file is a GuardError listing every bad line."""
    from guardedge.bench.evaldata import EvalDataError
    from guardedge.bench.evaldata import load as load_data

    if limit is not None and limit < 1:
        raise GuardError("--limit must be at least 1")
    try:
        return load_data(source, limit, family)
    except EvalDataError as exc:
        raise GuardError(str(exc)) from None


def fingerprints(data, family) -> dict[str, str]:
    """A content hash per example (the rendered prompt and the image's pixels): two sets that share
    a request share a fingerprint, whatever their ids or files say."""
    import hashlib

    from guardedge.runtime.images import decode_image

    out = {}
    for example in data.examples:
        digest = hashlib.sha256(family.render(example.request).encode())
        for image in example.request.images:  # parsing keeps the encoded bytes: hash what the model sees
            digest.update(decode_image(image).image.tobytes())
        out[digest.hexdigest()] = example.id
    return out


def check_disjoint(calibration, heldout, family) -> None:
    """Refuse calibration and held-out data that share requests: a figure on shared data is not held out."""
    shared = set(fingerprints(calibration, family)) & set(fingerprints(heldout, family))
    if shared:
        raise GuardError(f"--calib {calibration.source} and --heldout {heldout.source} share {len(shared)} request(s); "
                         "held-out data must be data the recipe was not chosen on")

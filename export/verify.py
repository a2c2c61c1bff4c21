"""``guardedge export verify OUT``: is this artifact intact, and does it still answer as exported?

1. Every file's sha256 against manifest.json (a missing, added or changed file fails, named).
2. A parity smoke: the artifact classifies its family's fixed smoke requests (Llama Guard: the
   demo samples: text, images, responses, custom policy; LlavaGuard: images of several sizes) and its answers are compared with the ones recorded in the
   manifest at export time — verdicts and categories must be equal, P(unsafe) within
   ``--tolerance``. Exporters record them (export/agreement.py ``smoke_record``);
   :func:`record_smoke` does it for a directory made by other means.

Exit 0 when both pass, 1 otherwise, with what differs.

    guardedge export verify /models/guard-int8 [--tolerance 0.02] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from guardedge.export.agreement import answers, smoke_record, smoke_requests
from guardedge.runtime.artifact import read_manifest, set_validation, verify_files
from guardedge.runtime.errors import GuardError

DEFAULT_TOLERANCE = 0.02  # P(unsafe); recorded and re-run on the same backend and precision


def smoke_answers(engine) -> list[dict]:
    """The engine's answers to the smoke requests (one batch), in the form the manifest stores."""
    family = engine.family.name
    requests = [engine.parse(r) for r in smoke_requests(family)]
    return smoke_record(requests, answers(engine, requests), family)


def record_smoke(out_dir: Path, engine=None, device: str | None = None) -> list[dict]:
    """Classify the smoke requests with the artifact and store the answers in its manifest."""
    from guardedge.runtime.engine import EngineOptions, load_engine

    engine = engine or load_engine(str(out_dir), EngineOptions(device=device, progress=False))
    answers = smoke_answers(engine)
    manifest = read_manifest(out_dir)
    set_validation(out_dir, {**manifest.get("validation", {}), "smoke": answers})
    return answers


def compare(recorded: list[dict], now: list[dict], tolerance: float) -> list[str]:
    """Differences between recorded and current smoke answers, one line each."""
    problems = []
    current = {a["request_id"]: a for a in now}
    for old in recorded:
        new = current.get(old["request_id"])
        if new is None:
            problems.append(f"{old['request_id']}: no answer now")
        elif (new["verdict"], new["categories"]) != (old["verdict"], old["categories"]):
            problems.append(f"{old['request_id']}: {new['verdict']} {new['categories']} now, {old['verdict']} {old['categories']} at export")
        elif abs(new["unsafe_probability"] - old["unsafe_probability"]) > tolerance:
            problems.append(f"{old['request_id']}: P(unsafe) {new['unsafe_probability']:.4f} now, {old['unsafe_probability']:.4f} at export")
    return problems


def verify(out_dir: Path, tolerance: float = DEFAULT_TOLERANCE, device: str | None = None) -> dict:
    """Hashes, then the parity smoke; returns a report (``ok`` plus details), never raises for a mismatch."""
    from guardedge.runtime.engine import EngineOptions, load_engine

    report: dict = {"artifact": str(out_dir), "hashes": "unchecked", "smoke": "unchecked", "problems": []}
    try:
        manifest = read_manifest(out_dir)
        if manifest is None:
            raise GuardError(f"{out_dir} has no manifest.json: not a guardedge artifact")
        verify_files(out_dir, manifest, show_progress=True)
        report["hashes"] = f"ok ({len(manifest['files'])} files)"
        recorded = manifest.get("validation", {}).get("smoke")
        if not recorded:
            raise GuardError("the manifest records no smoke answers (validation.smoke); re-export the artifact")
        engine = load_engine(str(out_dir), EngineOptions(device=device, progress=False))
        report["problems"] = compare(recorded, smoke_answers(engine), tolerance)
        report["smoke"] = "ok" if not report["problems"] else f"{len(report['problems'])} of {len(recorded)} differ"
    except GuardError as exc:
        report["problems"].append(str(exc))
    report["ok"] = not report["problems"]
    return report


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("artifact", type=Path, help="an artifact directory (with manifest.json)")
    parser.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE, help="largest |ΔP(unsafe)| accepted (default 0.02)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def main(args: argparse.Namespace) -> int:
    report = verify(args.artifact, args.tolerance, args.device)
    if args.json:
        print(json.dumps(report))
    else:
        print(f"{report['artifact']}: hashes {report['hashes']}; parity smoke {report['smoke']}")
        for problem in report["problems"]:
            print(f"  - {problem}", file=sys.stderr)
    return 0 if report["ok"] else 1

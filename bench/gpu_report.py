"""The report of ``guardedge bench gpu-check``: one Markdown section for bench/RESULTS.md and one JSON file.

Both files are rewritten after every section (written whole, then renamed into place), so a run
stopped by its time budget, or killed with its machine, still leaves every finished section.
A section's result is a dict: ``status`` (ok, skipped, error, cut), optional ``reason``,
``seconds``, ``notes`` (lines) and ``tables`` ({title: [row dicts]}); the Markdown renders any
such result, so the writer is tested on fake measurements (tests/test_gpu_check.py).

    report = Report(Path("out"), {"command": "...", "device": "NVIDIA H200"})
    report.add("demo", {"status": "ok", "tables": {"parity": [{"backend": "torch", "agree": "8/8"}]}})
"""

from __future__ import annotations

import json
import os
from pathlib import Path

JSON_NAME = "gpu_check.json"
MD_NAME = "gpu_check.md"

TITLES = {
    "env": "Machine and packages",
    "demo": "Demo guard: each backend's CUDA path against CPU fp32",
    "fullsize": "Llama Guard 3 Vision 11B, random weights, 4-tile image",
    "switches": "Fast-path switches, off and on (runtime/backends/fastpaths.py)",
    "preprocess": "Image preprocessing on the GPU",
}


class Report:
    def __init__(self, out: Path, meta: dict):
        self.out = Path(out)
        self.meta = dict(meta)
        self.sections: dict[str, dict] = {}
        self.out.mkdir(parents=True, exist_ok=True)

    def add(self, name: str, result: dict) -> None:
        self.sections[name] = result
        self.write()

    def note(self, line: str) -> None:
        """A run-level line (e.g. the budget ran out), written at once."""
        self.meta.setdefault("notes", []).append(line)
        self.write()

    def data(self) -> dict:
        return {**self.meta, "sections": self.sections}

    def write(self) -> None:
        _write_atomic(self.out / JSON_NAME, json.dumps(self.data(), indent=1, default=str) + "\n")
        _write_atomic(self.out / MD_NAME, self.markdown())

    def markdown(self) -> str:
        meta = self.meta
        lines = [f"### gpu-check: {meta.get('device', '?')}, {meta.get('date', '?')}", ""]
        lines += [f"`{meta.get('command', 'guardedge bench gpu-check')}` — {meta.get('versions', '')}; "
                  f"budget {meta.get('budget_s', '?')} s, wall {meta.get('wall_s', '?')} s.", ""]
        lines += [f"- {n}" for n in meta.get("notes", [])]
        for name, result in self.sections.items():
            lines += ["", f"#### {TITLES.get(name, name)}", ""]
            lines += section_lines(result)
        return "\n".join(lines).rstrip() + "\n"


def section_lines(result: dict) -> list[str]:
    status = result.get("status", "ok")
    head = f"Status: {status}"
    if result.get("seconds") is not None:
        head += f" ({result['seconds']:.1f} s)"
    if result.get("reason"):
        head += f": {result['reason']}"
    lines = [head + "."]
    lines += [f"- {n}" for n in result.get("notes", [])]
    for title, rows in result.get("tables", {}).items():
        if rows:
            lines += ["", f"{title}:", "", *table(rows)]
    return lines


def table(rows: list[dict]) -> list[str]:
    """A Markdown table over the union of the rows' keys, in first-seen order; blanks for gaps."""
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    out = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        out.append("| " + " | ".join(_cell(row.get(c)) for c in columns) + " |")
    return out


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)

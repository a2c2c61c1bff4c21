"""What an output holds, and what the run did: the summary printed at the end and ``--report``.

The counts are read back from the committed parts (verdict, categories, error and P(unsafe)
columns only, one part at a time), so they cover every run that wrote to the output, not just
the last; throughput is this run's. ``--report FILE.md`` writes the same as Markdown with a
histogram of P(unsafe) (``FILE.png`` beside it; matplotlib, from the ``bench`` or ``test``
extra, imported only then).

    python -m guardedge.runtime.annotate.summary OUT [--report OUT.md]   # summarise an output again
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from guardedge.runtime.annotate.sink import HEADER, read_rows

BINS = 20
COLUMNS = ["key", "verdict", "categories", "error", "unsafe_probability"]


@dataclass
class OutputSummary:
    rows: int = 0
    verdicts: Counter = field(default_factory=Counter)
    categories: Counter = field(default_factory=Counter)
    error_codes: Counter = field(default_factory=Counter)
    error_examples: list[tuple[str, str]] = field(default_factory=list)
    histogram: list[int] = field(default_factory=lambda: [0] * BINS)  # P(unsafe) in [i/BINS, (i+1)/BINS)
    header: dict = field(default_factory=dict)

    def add(self, row: dict) -> None:
        self.rows += 1
        verdict = row["verdict"] or "error"
        self.verdicts[verdict] += 1
        self.categories.update(row["categories"] or [])
        if row["verdict"] is None:
            code = (row["error"] or "").split(":", 1)[0]
            self.error_codes[code] += 1
            if len(self.error_examples) < 5:
                self.error_examples.append((row["key"], row["error"] or ""))
        if row["unsafe_probability"] is not None:
            self.histogram[min(BINS - 1, int(row["unsafe_probability"] * BINS))] += 1

    def to_json(self) -> dict:
        return {"rows": self.rows, "verdicts": dict(self.verdicts), "categories": dict(self.categories),
                "errors": dict(self.error_codes), "p_unsafe_histogram": self.histogram}


def summarize(out: Path) -> OutputSummary:
    summary = OutputSummary()
    header = Path(out) / HEADER
    summary.header = json.loads(header.read_text()) if header.is_file() else {}
    for row in read_rows(out, COLUMNS):
        summary.add(row)
    return summary


def text(summary: OutputSummary, stats=None) -> str:
    """The human summary (stats: this run's RunStats, or None)."""
    lines = [f"output: {summary.rows} rows  (model {summary.header.get('model', '?')}, family {summary.header.get('family', '?')})"]
    lines.append("verdicts: " + ", ".join(f"{k} {v}" for k, v in sorted(summary.verdicts.items())) if summary.verdicts else "verdicts: none")
    if summary.categories:
        lines.append("categories: " + ", ".join(f"{k} {v}" for k, v in sorted(summary.categories.items())))
    if summary.error_codes:
        lines.append("errors: " + ", ".join(f"{k} {v}" for k, v in sorted(summary.error_codes.items())))
        lines.extend(f"  e.g. {key}: {message[:160]}" for key, message in summary.error_examples[:3])
    if stats is not None:
        busy = f", engine busy {stats.engine_busy:.0%} of it" if stats.engine_seconds else ""
        lines.append(f"this run: {stats.written} rows in {stats.seconds:.1f} s ({stats.items_per_second:.2f} items/s{busy}), "
                     f"{stats.errors} errors, {stats.already_done} already done, {stats.duplicates} duplicate keys skipped")
        if stats.duplicate_examples:
            lines.append(f"  duplicate keys (annotated once): {', '.join(stats.duplicate_examples)}")
        if stats.stopped_by:
            lines.append(f"stopped by {stats.stopped_by}: what was done is written; rerun the same command to resume")
    return "\n".join(lines)


def write_report(path: Path, summary: OutputSummary, stats=None) -> Path:
    """Markdown summary at ``path`` and its P(unsafe) histogram as ``path`` with .png; returns the PNG."""
    path = Path(path)
    plot = path.with_suffix(".png")
    _plot(summary, plot)
    header = summary.header
    lines = [f"# Annotations: {header.get('model', '?')}", "",
             f"- rows: {summary.rows}", f"- family: {header.get('family', '?')}",
             f"- model sha256: `{header.get('model_sha256', '?')}`", f"- policy sha256: `{header.get('policy_sha256', '?')}`"]
    if stats is not None:
        lines += [f"- this run: {stats.written} rows, {stats.seconds:.1f} s, {stats.items_per_second:.2f} items/s, "
                  f"{stats.errors} errors, {stats.already_done} already done"]
    lines += ["", "| verdict | rows | share |", "|---|---|---|"]
    lines += [f"| {k} | {v} | {v / max(1, summary.rows):.1%} |" for k, v in sorted(summary.verdicts.items())]
    if summary.categories:
        lines += ["", "| category | rows |", "|---|---|"] + [f"| {k} | {v} |" for k, v in sorted(summary.categories.items())]
    if summary.error_codes:
        lines += ["", "| error | rows |", "|---|---|"] + [f"| {k} | {v} |" for k, v in sorted(summary.error_codes.items())]
        lines += ["", "Examples:", ""] + [f"- `{key}`: {message[:300]}" for key, message in summary.error_examples]
    lines += ["", f"![P(unsafe) histogram]({plot.name})", ""]
    path.write_text("\n".join(lines))
    return plot


def _plot(summary: OutputSummary, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.bar([(i + 0.5) / BINS for i in range(BINS)], summary.histogram, width=1 / BINS, edgecolor="black")
    ax.set_xlabel("P(unsafe)")
    ax.set_ylabel("rows")
    ax.set_title(f"{summary.rows} rows, {summary.verdicts.get('unsafe', 0)} unsafe")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="summarise a guardedge annotate output")
    parser.add_argument("out")
    parser.add_argument("--report", help="also write this Markdown file (and its .png)")
    args = parser.parse_args(argv)
    summary = summarize(Path(args.out))
    print(text(summary))
    if args.report:
        write_report(Path(args.report), summary)
    print(json.dumps(summary.to_json()))
    return 0


if __name__ == "__main__":
    sys.exit(main())

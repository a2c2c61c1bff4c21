"""The files ``guardedge bench drift`` writes: report.json (everything), report.md (for people) and
PNG plots (matplotlib, Agg): per candidate, its P(unsafe) against the baseline's and its ΔP(unsafe)
against the baseline's P(unsafe) (where answers move, and that flips sit near 0.5); per-category F1,
flips per candidate. matplotlib is the ``bench`` extra; without it the plots are skipped and
the report says so.
"""

from __future__ import annotations

import json
from pathlib import Path


def write_report(out: Path, report: dict, data, baseline: dict, candidates: list[dict]) -> dict:
    files = {"json": "report.json", "markdown": "report.md", "plots": plots(out, report, baseline, candidates)}
    report = {**report, "files": files}
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "report.md").write_text(markdown(report))
    return files


def plots(out: Path, report: dict, baseline: dict, candidates: list[dict]) -> list[str] | str:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "skipped: matplotlib is not installed (pip install 'guardedge[bench]')"
    names = []
    for number, cand in enumerate(candidates, 1):
        names.append(_scatter(plt, out / f"scatter_candidate{number}.png", baseline, cand, report["candidates"][number - 1]["label"]))
        names.append(_delta(plt, out / f"delta_candidate{number}.png", baseline, cand, report["candidates"][number - 1]["label"]))
    names.append(_flips(plt, out / "flips.png", report))
    if report["baseline"]["metrics"] is not None:
        names.append(_category_f1(plt, out / "category_f1.png", report))
    return names


def _scatter(plt, path: Path, baseline: dict, cand: dict, label: str) -> str:
    fig, ax = plt.subplots(figsize=(5, 5))
    xs = [p.p_unsafe for p in baseline["predictions"]]
    ys = [p.p_unsafe for p in cand["predictions"]]
    same = [a.verdict == b.verdict for a, b in zip(baseline["predictions"], cand["predictions"])]
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8)
    ax.scatter([x for x, s in zip(xs, same) if s], [y for y, s in zip(ys, same) if s], s=10, alpha=0.6, label="same verdict")
    ax.scatter([x for x, s in zip(xs, same) if not s], [y for y, s in zip(ys, same) if not s], s=18, color="red", label="flipped")
    ax.set(xlabel=f"baseline P(unsafe) ({baseline['info']['name']})", ylabel="candidate P(unsafe)", title=label, xlim=(0, 1), ylim=(0, 1))
    ax.legend(loc="upper left")
    return _save(fig, path)


def _delta(plt, path: Path, baseline: dict, cand: dict, label: str) -> str:
    """ΔP(unsafe) (candidate - baseline) against the baseline's P(unsafe): how far each answer moved,
    and where; flips sit near P = 0.5, and the band shows the margin buckets' edges."""
    fig, ax = plt.subplots(figsize=(6, 4))
    xs = [p.p_unsafe for p in baseline["predictions"]]
    ds = [c.p_unsafe - b.p_unsafe for b, c in zip(baseline["predictions"], cand["predictions"])]
    same = [a.verdict == b.verdict for a, b in zip(baseline["predictions"], cand["predictions"])]
    ax.axhline(0, color="grey", lw=0.8)
    ax.axvspan(0.45, 0.55, color="orange", alpha=0.12, label="margin < 0.05")
    ax.scatter([x for x, s in zip(xs, same) if s], [d for d, s in zip(ds, same) if s], s=10, alpha=0.6, label="same verdict")
    ax.scatter([x for x, s in zip(xs, same) if not s], [d for d, s in zip(ds, same) if not s], s=22, color="red", label="flipped")
    ax.set(xlabel=f"baseline P(unsafe) ({baseline['info']['name']})", ylabel="ΔP(unsafe): candidate - baseline",
           title=label, xlim=(0, 1))
    ax.legend(loc="best", fontsize=7)
    return _save(fig, path)


def _flips(plt, path: Path, report: dict) -> str:
    kinds = sorted({k for c in report["candidates"] for k in c["drift"]["flip_kinds"]}) or ["none"]
    fig, ax = plt.subplots(figsize=(max(5, 1.6 * len(report["candidates"]) + 3), 4))
    width = 0.8 / len(kinds)
    for i, kind in enumerate(kinds):
        counts = [c["drift"]["flip_kinds"].get(kind, 0) for c in report["candidates"]]
        ax.bar([x + i * width for x in range(len(counts))], counts, width, label=kind)
    ax.set_xticks([x + 0.4 - width / 2 for x in range(len(report["candidates"]))], [c["label"] for c in report["candidates"]], fontsize=7)
    ax.set(ylabel="examples", title="changes against the baseline")
    ax.legend(fontsize=7)
    return _save(fig, path)


def _category_f1(plt, path: Path, report: dict) -> str:
    series = [("baseline", report["baseline"]["metrics"])] + [(c["label"], c["metrics"]) for c in report["candidates"]]
    codes = [k for k in series[0][1]["categories"] if k != "_micro"]
    for _, m in series[1:]:
        codes += [k for k in m["categories"] if k != "_micro" and k not in codes]
    fig, ax = plt.subplots(figsize=(max(6, 0.5 * len(codes) * len(series)), 4))
    width = 0.8 / len(series)
    for i, (name, m) in enumerate(series):
        ax.bar([x + i * width for x in range(len(codes))], [m["categories"].get(c, {}).get("f1", 0.0) for c in codes], width, label=name)
    ax.set_xticks([x + 0.4 - width / 2 for x in range(len(codes))], codes)
    ax.set(ylabel="F1", ylim=(0, 1.05), title="per-category F1 (examples labelled or predicted unsafe)")
    ax.legend(fontsize=7)
    return _save(fig, path)


def _save(fig, path: Path) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path.name


def markdown(report: dict) -> str:
    rows = [[cell.replace("|", "\\|") for cell in row] for row in table_rows(report)]  # "|dp|" in a table cell
    base = report["baseline"]
    lines = [f"# Drift report: {report['data']['source']} ({report['data']['n']} examples)", "",
             f"Baseline: `{base['model']}` ({base['info']['backend']}/{base['info']['precision']}/{base['info']['device']}).",
             f"Gate: `{report['gate']['expression'] or 'none'}`: **{'pass' if report['passed'] else 'FAIL'}**.", "",
             "| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    lines += ["| " + " | ".join(r) + " |" for r in rows[1:]]
    for c in report["candidates"]:
        lines += ["", f"## {c['label']}", "", f"`{c['model']}`", ""]
        lines += [f"- gate failure: {f}" for f in c["gate"]["failures"]]
        if c["metrics"]:
            lines += _metrics_table(base["metrics"], c["metrics"])
        lines += _drift_tables(c["drift"])
        flips = sorted(c["drift"]["flips"], key=lambda f: (f["kind"] == "categories", f["margin"]))
        lines += ["", f"{len(flips)} changed example(s), nearest the boundary first" + (":" if flips else "."), ""]
        if flips:
            lines += ["| id | change | baseline | P(unsafe) | margin | candidate | P(unsafe) |", "|---|---|---|---|---|---|---|"]
            lines += [f"| {f['id']} | {f['kind']} | {_verdict(f['baseline'])} | {f['baseline']['p_unsafe']:.4f} | {f['margin']:.4f} | "
                      f"{_verdict(f['candidate'])} | {f['candidate']['p_unsafe']:.4f} |" for f in flips]
    plots = report["files"]["plots"]
    lines += ["", "## Plots", ""] + ([f"![{p}]({p})" for p in plots] if isinstance(plots, list) else [plots])
    return "\n".join(lines) + "\n"


def _drift_tables(d: dict) -> list[str]:
    """Agreement (Wilson 95 % interval) and |ΔP| by baseline margin, by label and by category."""
    lines = ["", f"Agreement {d['agreement']:.4f} (Wilson 95 % interval {d['agreement_lower']:.4f}-{d['agreement_upper']:.4f}); "
             f"|ΔP(unsafe)| p50 {d['p50_abs_delta_p']:.5f}, p99 {d['p99_abs_delta_p']:.5f}, max {d['max_abs_delta_p']:.5f}."]
    b = d["breakdown"]
    for title, groups in (("baseline margin \\|P(unsafe) − 0.5\\|", d["by_margin"]), (f"label ({b['source']})", b["by_label"]),
                          (f"category ({b['source']})", b["by_category"])):
        lines += ["", f"| {title} | n | verdicts equal | agreement | 95 % lower | p99 \\|ΔP\\| | max \\|ΔP\\| |", "|---|---|---|---|---|---|---|"]
        lines += [f"| {k} | {g['requests']} | {g['verdicts_equal']} | {_opt(g['agreement'])} | {g['agreement_lower']:.4f} | "
                  f"{g['p99_abs_delta_p']:.5f} | {g['max_abs_delta_p']:.5f} |" for k, g in groups.items()]
    return lines


def _opt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _metrics_table(base: dict, cand: dict) -> list[str]:
    lines = ["| task | metric | baseline | candidate | delta |", "|---|---|---|---|---|"]
    for task in ("prompt", "response"):
        for key in ("precision", "recall", "f1", "fpr", "roc_auc", "pr_auc"):
            if task in base and base[task][key] is not None and cand[task][key] is not None:
                b, c = base[task][key], cand[task][key]
                lines.append(f"| {task} | {key} | {b:.4f} | {c:.4f} | {c - b:+.4f} |")
    b, c = base["categories"]["_micro"]["f1"], cand["categories"]["_micro"]["f1"]
    lines.append(f"| all | category micro F1 | {b:.4f} | {c:.4f} | {c - b:+.4f} |")
    return lines


def _verdict(side: dict) -> str:
    return side["verdict"] + (f" {','.join(side['categories'])}" if side["categories"] else "")


def _fmt(value, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def table_rows(report: dict) -> list[list[str]]:
    rows = [["model", "variant", "agree", "95% CI", "kappa", "flips", "p50|dp|", "p99|dp|", "max|dp|", "prompt F1",
             "response F1", "gate"]]
    base = report["baseline"]
    rows.append(["baseline: " + base["info"]["name"], _variant(base["info"]), "", "", "", "", "", "", "",
                 *[_fmt((base["metrics"] or {}).get(t, {}).get("f1")) for t in ("prompt", "response")], ""])
    for c in report["candidates"]:
        d, m = c["drift"], c["metrics"] or {}
        f1 = [_fmt(m.get(t, {}).get("f1")) + (f" ({c['deltas'][t + '_f1_delta']:+.4f})" if c["deltas"] and t + "_f1_delta" in c["deltas"] else "")
              for t in ("prompt", "response")]
        gate = "-" if not report["gate"]["conditions"] else "pass" if c["gate"]["passed"] else "FAIL"
        rows.append([c["label"], _variant(c["info"]), _fmt(d["agreement"]), f"{d['agreement_lower']:.4f}-{d['agreement_upper']:.4f}",
                     _fmt(d["kappa"]), str(d["verdict_flips"]), _fmt(d["p50_abs_delta_p"], 5), _fmt(d["p99_abs_delta_p"], 5),
                     _fmt(d["max_abs_delta_p"], 5), *f1, gate])
    return rows


def _variant(info: dict) -> str:  # also drift.py's summary
    return f"{info['backend']}/{info['precision']}/{info['device']}"

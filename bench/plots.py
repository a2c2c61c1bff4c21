"""PNG plots for the bench commands people compare results of (``--plot FILE.png``).

matplotlib (the ``bench`` extra) with the Agg backend, imported only when a plot is asked for;
without it, :func:`pyplot` raises a ``RuntimeError`` that says what to install. Each function
draws one report as its command printed it, titled with the machine it ran on.

    guardedge bench reference --model demo --plot reference.png
    guardedge bench latency --model demo --concurrency 1,4,8 --plot latency.png
    guardedge bench memory --model demo --model OUT --plot memory.png
    guardedge bench preprocess --plot preprocess.png
"""

from __future__ import annotations

MB = 1024 * 1024


def pyplot():
    try:
        import matplotlib
    except ImportError:
        raise RuntimeError("--plot needs matplotlib: pip install 'guardedge[bench]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str) -> None:
    plt = pyplot()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def reference(report: dict, labels: dict[str, str], path: str) -> None:
    """p50 and p90 per request for each side, with its speedup over the published snippet."""
    plt = pyplot()
    names = list(labels)
    p50 = [report["timings"][n]["p50_ms"] for n in names]
    p90 = [report["timings"][n]["p90_ms"] for n in names]
    fig, ax = plt.subplots(figsize=(7.5, 4))
    rows = range(len(names))
    ax.barh([r + 0.2 for r in rows], p50, height=0.4, label="p50")
    ax.barh([r - 0.2 for r in rows], p90, height=0.4, label="p90", alpha=0.6)
    for r, name in zip(rows, names):
        ax.annotate(f"{report['speedup'][name]:.2f}x", (p50[r], r + 0.2), xytext=(4, -4), textcoords="offset points", fontsize=8)
    ax.set_yticks(list(rows), [labels[n] for n in names], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("ms per request (label: p50 speedup over the published snippet)", fontsize=8)
    ax.set_title(f"bench reference: {report['machine']}, torch {report['torch']}", fontsize=9)
    ax.legend(fontsize=8)
    _save(fig, path)


def latency(report: dict, path: str) -> None:
    """p50/p95/p99 latency and throughput against concurrency."""
    plt = pyplot()
    levels = [row for row in report["levels"] if row["p50_ms"] is not None]
    x = [row["concurrency"] for row in levels]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.6))
    for key in ("p50_ms", "p95_ms", "p99_ms"):
        left.plot(x, [row[key] for row in levels], marker="o", label=key.split("_")[0])
    left.set_xlabel("concurrency")
    left.set_ylabel("latency (ms)")
    left.legend(fontsize=8)
    right.plot(x, [row["throughput_rps"] for row in levels], marker="o", color="tab:green")
    right.set_xlabel("concurrency")
    right.set_ylabel("requests / s")
    for ax in (left, right):
        ax.set_xticks(x)
        ax.grid(alpha=0.3)
    where = report.get("variant") or f"server {report.get('target')}"
    fig.suptitle(f"bench latency: {where}, path {report['path']}; {report['machine']}", fontsize=9)
    _save(fig, path)


def memory(report: dict, path: str) -> None:
    """Peak host RSS (and GPU memory, when measured) after load and after classify, per variant."""
    plt = pyplot()
    rows = [row for row in report["variants"] if "error" not in row]
    gpu = any(row["load"]["peak_gpu_bytes"] is not None for row in rows)
    kinds = [("load", "peak_rss_bytes", "load RSS"), ("classify", "peak_rss_bytes", "classify RSS")]
    kinds += [("load", "peak_gpu_bytes", "load GPU"), ("classify", "peak_gpu_bytes", "classify GPU")] if gpu else []
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(rows)), 3.8))
    width = 0.8 / len(kinds)
    for k, (stage, key, label) in enumerate(kinds):
        values = [(row[stage][key] or 0) / MB for row in rows]
        ax.bar([i + (k - (len(kinds) - 1) / 2) * width for i in range(len(rows))], values, width=width, label=label)
    ax.set_xticks(range(len(rows)), [f"{row['model'][-24:]}\n{row['variant']}" for row in rows], fontsize=7)
    ax.set_ylabel("MiB (peaks; classify includes load)")
    ax.set_title(f"bench memory: {report['machine']}", fontsize=9)
    ax.set_ylim(0, ax.get_ylim()[1] * 1.15)  # room for the legend above the bars
    ax.legend(fontsize=8, loc="upper center", ncol=len(kinds))
    _save(fig, path)


def preprocess(report: dict, path: str) -> None:
    """p50 per image and path (p90 as the error bar), with the fast path's speedup."""
    plt = pyplot()
    rows = report["images"]
    names = [n for n in ("decode", "transformers", "compact", "compact+float", "device") if n in rows[0]["timings"]]
    fig, ax = plt.subplots(figsize=(max(6.5, 1.7 * len(rows)), 3.8))
    width = 0.8 / len(names)
    for k, name in enumerate(names):
        p50 = [r["timings"][name]["p50_ms"] for r in rows]
        p90 = [r["timings"][name]["p90_ms"] for r in rows]
        xs = [i + (k - (len(names) - 1) / 2) * width for i in range(len(rows))]
        ax.bar(xs, p50, width=width, label=name, yerr=[[0] * len(rows), [b - a for a, b in zip(p50, p90)]], capsize=2)
    for i, r in enumerate(rows):
        top = max(r["timings"][n]["p90_ms"] for n in names)
        ax.annotate(f"{r['speedup']['compact+float']:.2f}x", (i, top), xytext=(0, 3), textcoords="offset points", ha="center", fontsize=8)
    ax.set_xticks(range(len(rows)), [f"{r['image'][:20]}\n{r['size']}" for r in rows], fontsize=7)
    ax.set_ylabel("ms per image (bar p50, whisker p90)")
    ax.set_title(f"bench preprocess: {report['machine']}; label: transformers / fast path", fontsize=8)
    ax.legend(fontsize=7)
    _save(fig, path)

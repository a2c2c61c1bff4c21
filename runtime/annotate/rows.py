"""One output row per item, and the Arrow schema every part file shares.

Columns: ``key``; ``verdict`` (safe / unsafe / unparseable, null when the item errored);
``categories``; ``unsafe_probability`` and ``safe_probability``; ``category_scores`` (code ->
score, where the family gives them; empty otherwise); ``rationale`` (null unless asked);
``raw_output``; ``error`` (``CODE: message``: an unreadable or refused item, or why an answer
did not parse; null when there is none); ``model_sha256`` and ``policy_sha256``
(runtime/annotate/policy.py). Error codes: ``SOURCE`` (the input held no usable request),
``INVALID_ARGUMENT`` (the request was refused, as ``guardedge classify`` would), ``INTERNAL``
(the engine failed on this item alone).
"""

from __future__ import annotations

COLUMNS = ("key", "verdict", "categories", "unsafe_probability", "safe_probability", "category_scores",
           "rationale", "raw_output", "error", "model_sha256", "policy_sha256")
MAX_ERROR_CHARS = 2000


def verdict_row(key: str, verdict, model_sha256: str, policy_sha256: str, rationale: bool) -> dict:
    """The row of a verdict (runtime/types.py ``Verdict``)."""
    # Verdict.category_scores is arriving (per-category scores): read it when present.
    scores = getattr(verdict, "category_scores", None) or {}
    return {
        "key": key,
        "verdict": verdict.verdict,
        "categories": list(verdict.categories),
        "unsafe_probability": float(verdict.unsafe_probability),
        "safe_probability": float(verdict.safe_probability),
        "category_scores": {str(k): float(v) for k, v in dict(scores).items()},
        "rationale": verdict.rationale if rationale else None,
        "raw_output": verdict.raw_output,
        "error": verdict.error or None,
        "model_sha256": model_sha256,
        "policy_sha256": policy_sha256,
    }


def error_row(key: str, error: str, model_sha256: str, policy_sha256: str) -> dict:
    return {
        "key": key, "verdict": None, "categories": [], "unsafe_probability": None, "safe_probability": None,
        "category_scores": {}, "rationale": None, "raw_output": "", "error": error[:MAX_ERROR_CHARS],
        "model_sha256": model_sha256, "policy_sha256": policy_sha256,
    }


def schema():
    import pyarrow as pa

    return pa.schema([
        ("key", pa.string()),
        ("verdict", pa.string()),
        ("categories", pa.list_(pa.string())),
        ("unsafe_probability", pa.float64()),
        ("safe_probability", pa.float64()),
        ("category_scores", pa.map_(pa.string(), pa.float64())),
        ("rationale", pa.string()),
        ("raw_output", pa.string()),
        ("error", pa.string()),
        ("model_sha256", pa.string()),
        ("policy_sha256", pa.string()),
    ])


def to_table(rows: list[dict], metadata: dict[str, str] | None = None):
    """Rows as an Arrow table of :func:`schema` (maps given as dicts)."""
    import pyarrow as pa

    table = pa.Table.from_pylist(rows, schema=schema())
    return table.replace_schema_metadata(metadata) if metadata else table


def from_arrow(record: dict) -> dict:
    """A row read back from Parquet, with its map as a dict again (Arrow gives (key, value) pairs)."""
    if "category_scores" not in record:
        return record
    scores = record["category_scores"]
    return {**record, "category_scores": dict(scores) if isinstance(scores, list) else (scores or {})}

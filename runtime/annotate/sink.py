"""The output directory: a header, part files committed by rename, and resumption from them.

    OUT/_annotate.json            what the rows are: model identity, family, policy hash, format
    OUT/part-000000.parquet       committed rows (or part-000000.jsonl with --output-format jsonl)
    OUT/.part-000001.parquet.tmp  a part being written (hidden: dataset readers skip it)

A part is written to its hidden temporary name, fsynced, renamed to its final name (atomic on
POSIX) and the directory fsynced. So at any kill (SIGKILL included) a part either exists whole or
not at all: on restart the temporaries are deleted and the keys of the committed parts are read
back (the ``key`` column only) into a :class:`KeyIndex`; the runner skips those keys and redoes
the rest. Nothing committed is redone (no duplicate); nothing uncommitted is lost for good (it
is redone). What a kill costs is the rows not yet flushed: at most ``flush_rows`` rows or
``flush_seconds`` of work.

The header is written once, when the directory is created. Reopening it with another model,
family, policy, rationale setting or output format is refused (:class:`OutputMismatch`): name a
new ``--out`` for those results. The directory is a Parquet dataset (``pyarrow.dataset``,
``pandas.read_parquet(OUT)``, DuckDB ``OUT/*.parquet``, Ray ``read_parquet``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator, Literal, TextIO

from guardedge.runtime.annotate.keys import KeyIndex
from guardedge.runtime.annotate.rows import from_arrow, to_table
from guardedge.runtime.errors import GuardError

HEADER = "_annotate.json"
FORMAT = "guardedge-annotations/1"
OutputFormat = Literal["parquet", "jsonl"]
_PART = re.compile(r"^part-(\d{6,})\.(parquet|jsonl)$")


class OutputMismatch(GuardError):
    """The output directory holds rows of another model, policy or format."""


@dataclass(frozen=True)
class RunIdentity:
    """What every row of one output shares; a run must match it to add rows."""

    model: str
    model_sha256: str
    family: str
    policy_sha256: str
    rationale: bool
    output_format: OutputFormat


class OutputDir:
    def __init__(self, path: Path, identity: RunIdentity, details: dict | None = None):
        self.path = Path(path)
        self.identity = identity
        self.details = details or {}  # recorded in the header: the policy's text, the source, versions
        self._lock_file: TextIO | None = None  # held from open() to close()

    def open(self) -> KeyIndex:
        """Create the directory (or check it is ours and of this run's identity), drop partial
        parts, and return the keys already committed."""
        self.check()
        self._lock()
        for tmp in self.path.glob(".*.tmp"):
            tmp.unlink()  # a part whose writer was killed before its rename: its rows are redone
        index = KeyIndex()
        for part in self.parts():
            index.add_many(read_keys(part))
        return index

    def close(self) -> None:
        """Release the lock (a process that ends releases it anyway)."""
        lock = self._lock_file
        if lock is not None:
            lock.close()
            self._lock_file = None

    def parts(self) -> list[Path]:
        return sorted((p for p in self.path.iterdir() if _PART.match(p.name)), key=lambda p: p.name)

    def writer(self, flush_rows: int = 1000, flush_seconds: float = 30.0) -> PartWriter:
        numbers = [int(match.group(1)) for p in self.parts() if (match := _PART.match(p.name))]  # parts() matched all
        return PartWriter(self, max(numbers, default=-1) + 1, flush_rows, flush_seconds)

    def check(self) -> None:
        """Refuse the directory if it is not ours or holds another model's or policy's rows; create
        it (with its header) if it does not exist."""
        header = self.path / HEADER
        if header.is_file():
            self._check(json.loads(header.read_text()))
            return
        if self.path.exists() and any(not p.name.startswith(".") for p in self.path.iterdir()):
            raise OutputMismatch(f"--out {self.path} is not empty and has no {HEADER}: it is not a guardedge annotate "
                                 "output; name a new or empty directory")
        self.path.mkdir(parents=True, exist_ok=True)
        record = {"format": FORMAT, **asdict(self.identity), **self.details,
                  "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        _write_atomically(header, (json.dumps(record, indent=2, ensure_ascii=False) + "\n").encode())

    def _lock(self) -> None:
        """Hold an exclusive lock on the output for this process's life (the kernel drops it at any
        exit, SIGKILL included): two runs appending to one output would duplicate rows."""
        import fcntl

        self._lock_file = lock = open(self.path / ".lock", "w")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OutputMismatch(f"--out {self.path}: another guardedge annotate is writing it") from None

    def _check(self, header: dict) -> None:
        if header.get("format") != FORMAT:
            raise OutputMismatch(f"{self.path / HEADER}: format {header.get('format')!r} is not {FORMAT!r}")
        mine = asdict(self.identity)
        differs = [k for k in ("model_sha256", "family", "policy_sha256", "rationale", "output_format")
                   if header.get(k) != mine[k]]
        if differs:
            said = "; ".join(f"{k}: the output has {_short(header.get(k))}, this run {_short(mine[k])}" for k in differs)
            what = "model" if "model_sha256" in differs or "family" in differs else "policy or settings"
            raise OutputMismatch(
                f"--out {self.path} holds annotations made with another {what} ({said}; the output's model is "
                f"{header.get('model')!r}). Rows of different models or policies never mix in one output: name a new "
                "--out for this run, or rerun with the output's model and policy to resume it.")


class PartWriter:
    """Buffers rows and commits them as numbered part files (see the module docstring)."""

    def __init__(self, out: OutputDir, number: int, flush_rows: int, flush_seconds: float):
        self.out = out
        self.number = number
        self.flush_rows = max(1, flush_rows)
        self.flush_seconds = flush_seconds
        self.rows: list[dict] = []
        self.committed = 0  # rows committed by this writer
        self._last = time.monotonic()

    def add(self, row: dict) -> None:
        self.rows.append(row)
        if len(self.rows) >= self.flush_rows or time.monotonic() - self._last >= self.flush_seconds:
            self.flush()

    def flush(self) -> None:
        self._last = time.monotonic()
        if not self.rows:
            return
        fmt = self.out.identity.output_format
        final = self.out.path / f"part-{self.number:06d}.{fmt}"
        _write_atomically(final, _encode(self.rows, fmt, self.out.identity))
        self.committed += len(self.rows)
        self.number += 1
        self.rows = []


def _encode(rows: list[dict], fmt: OutputFormat, identity: RunIdentity) -> bytes:
    if fmt == "jsonl":
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()
    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = pa.BufferOutputStream()
    pq.write_table(to_table(rows, {"guardedge": json.dumps(asdict(identity))}), sink, compression="zstd")
    return sink.getvalue().to_pybytes()


def _write_atomically(final: Path, data: bytes) -> None:
    tmp = final.with_name(f".{final.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, final)
    fd = os.open(final.parent, os.O_RDONLY)
    try:
        os.fsync(fd)  # the rename itself survives a power cut, not only a killed process
    finally:
        os.close(fd)


def read_keys(part: Path) -> list[str]:
    if part.suffix == ".jsonl":
        return [json.loads(line)["key"] for line in part.read_text(encoding="utf-8").splitlines() if line]
    import pyarrow.parquet as pq

    try:
        return pq.read_table(part, columns=["key"]).column("key").to_pylist()
    except Exception as exc:  # a committed part is whole: damage came from elsewhere
        raise GuardError(f"{part}: cannot read its keys ({exc}); move the file away to redo its rows") from None


def read_rows(out: Path, columns: list[str] | None = None) -> Iterator[dict]:
    """Every committed row of an output, part by part (one part in memory at a time)."""
    for part in sorted(p for p in Path(out).iterdir() if _PART.match(p.name)):
        if part.suffix == ".jsonl":
            for line in part.read_text(encoding="utf-8").splitlines():
                row = json.loads(line)
                yield {k: row[k] for k in columns} if columns else row
            continue
        import pyarrow.parquet as pq

        for record in pq.read_table(part, columns=columns).to_pylist():
            yield from_arrow(record)


def _short(value: object) -> str:
    """A sha256 shortened to 12 hex digits; anything else as it is."""
    return f"{value[:12]}…" if isinstance(value, str) and re.fullmatch(r"[0-9a-f]{64}", value) else repr(value)


def prepare_output(args: argparse.Namespace, source, policy):
    """The model directory and the checked output directory of a run, from the model's files and
    family alone (no weights loaded): a wrong policy, or an output of another model or policy, is
    refused in seconds, before a large model loads. The Ray driver uses the same."""
    from guardedge.runtime.annotate.policy import model_digest, validate_policy
    from guardedge.runtime import installed_version
    from guardedge.runtime.families import choose_family
    from guardedge.runtime.models import resolve_model

    model_dir = resolve_model(args.model, progress=not args.no_progress)
    family = choose_family(model_dir, args.family)
    defaults = family.default_categories()
    validate_policy(policy, defaults)
    identity = RunIdentity(model_dir.name, model_digest(model_dir), family.name, policy.digest(family.name, defaults),
                           policy.rationale, args.output_format)
    details = {"policy": policy.describe(), "source": source.describe(), "guardedge": installed_version()}
    out = OutputDir(Path(args.out), identity, details)
    out.check()
    return model_dir, out

"""The bundle's SHA256SUMS: every file but the list itself, in ``sha256sum`` format.

The format is coreutils' own, so a site can check a bundle before anything is installed
(``sha256sum -c SHA256SUMS``, what install.sh does); :func:`check` does the same in Python and
also names files that are not on the list.
"""

from __future__ import annotations

from pathlib import Path

from guardedge.runtime.artifact import hash_files

SUMS = "SHA256SUMS"


def bundle_files(root: Path) -> list[Path]:
    """Every regular file under ``root`` except SHA256SUMS, relative, sorted (symlinks are refused)."""
    out = []
    for path in sorted(root.rglob("*")):
        if path.is_symlink():
            raise ValueError(f"{path}: a bundle holds no symbolic links")
        if path.is_file() and path.relative_to(root).as_posix() != SUMS:
            out.append(path.relative_to(root))
    return out


def write(root: Path) -> int:
    """Hash every file and write SHA256SUMS; returns the number of files listed."""
    digests = hash_files(root, bundle_files(root), show_progress=True)
    (root / SUMS).write_text("".join(f"{digest}  {rel}\n" for rel, digest in sorted(digests.items())))
    return len(digests)


def read(root: Path) -> dict[str, str]:
    """SHA256SUMS as {relative path: sha256}."""
    listed = {}
    for number, line in enumerate((root / SUMS).read_text().splitlines(), 1):
        digest, sep, rel = line.partition("  ")
        if not sep or len(digest) != 64:
            raise ValueError(f"{root / SUMS}:{number} is not a 'sha256  path' line")
        listed[rel] = digest
    return listed


def check(root: Path) -> list[str]:
    """Problems, one line each (missing, modified, extra file); empty when the bundle is intact."""
    if not (root / SUMS).is_file():
        return [f"{root} has no {SUMS}: not a guardedge bundle, or it was not finished"]
    listed = read(root)
    present = {p.as_posix() for p in bundle_files(root)}
    problems = [f"missing: {rel}" for rel in sorted(set(listed) - present)]
    problems += [f"extra (not in {SUMS}): {rel}" for rel in sorted(present - set(listed))]
    actual = hash_files(root, [Path(rel) for rel in sorted(set(listed) & present)], show_progress=True)
    problems += [f"modified (sha256 differs): {rel}" for rel in sorted(actual) if actual[rel] != listed[rel]]
    return problems

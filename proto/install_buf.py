"""Install the pinned buf (the proto linter) from npm into guardedge's tools cache.

buf is not a Python package, so the default ``make test`` never installs it: tests/test_proto.py
lints with it when it is there and skips, saying why, when it is not. CI runs this first.

    python proto/install_buf.py          # prints the path of the buf binary
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

BUF_VERSION = "1.75.0"


def buf_path() -> Path:
    """Where the pinned buf lives once installed ($GUARDEDGE_HOME/tools/buf-<version>)."""
    home = Path(os.environ.get("GUARDEDGE_HOME", Path.home() / ".cache" / "guardedge"))
    return home / "tools" / f"buf-{BUF_VERSION}" / "node_modules" / ".bin" / "buf"


def install() -> Path:
    exe = buf_path()
    if exe.exists():
        return exe
    npm = shutil.which("npm")
    if npm is None:
        raise SystemExit(f"npm is not on PATH: cannot install @bufbuild/buf@{BUF_VERSION}")
    tool_dir = exe.parents[2]
    # Install beside the final place and rename it in, so an interrupted or concurrent install
    # never leaves a half-filled tools dir that later runs would trust.
    staging = tool_dir.with_name(f"{tool_dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    cmd = [npm, "install", "--prefix", str(staging), "--no-audit", "--no-fund", f"@bufbuild/buf@{BUF_VERSION}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        raise SystemExit(f"`{' '.join(cmd)}` exited {proc.returncode}:\n{proc.stdout}{proc.stderr}")
    try:
        staging.rename(tool_dir)
    except OSError:  # another run installed it meanwhile
        shutil.rmtree(staging, ignore_errors=True)
    if not exe.exists():
        raise SystemExit(f"npm installed @bufbuild/buf@{BUF_VERSION} but {exe} is missing")
    return exe


if __name__ == "__main__":
    print(install())
    sys.exit(0)

"""The container image, built and run with no registry and no network (``make image-check``).

1. A Debian base with python3 + venv from Debian packages (mmdebstrap), ``podman import``ed
   (cached in $GUARDEDGE_BASE_TAR, default /tmp/guardedge-debian-python.tar, since it takes minutes).
2. ``guardedge bundle create --model demo --image --bake-models`` builds the image from the bundle
   with ``podman build --pull=never --isolation=chroot`` and saves it into the bundle (image/).
3. The image's filesystem (``podman image mount``) is run the way a pod runs it: read-only root,
   tmpfs on /tmp, user 10001, the image's environment and command, in a network namespace with no
   network (``unshare -m -n`` + ``chroot``); ``podman run`` is not permitted in this sandbox. The
   server reports SERVING to ``guardedge health`` and answers Classify from the image's own client.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from checks import require_env, require_tools

GUARDEDGE = [sys.executable, "-m", "guardedge.runtime.cli"]
BASE = "localhost/guardedge-debian-python:bookworm"


def _needs() -> None:
    require_env("GUARDEDGE_DEPLOY_CHECKS", "image-check", "builds a base image and a container image (minutes)")
    require_tools("image-check", ("podman", "mmdebstrap", "unshare", "chroot", "ip"), root=True)


def _base_image() -> None:
    if subprocess.run(["podman", "image", "exists", BASE]).returncode == 0:
        return
    tar = Path(os.environ.get("GUARDEDGE_BASE_TAR", "/tmp/guardedge-debian-python.tar"))
    if not tar.is_file() or tar.stat().st_size == 0:
        subprocess.run(["mmdebstrap", "--variant=minbase", "--include=python3,python3-venv", "--format=tar",
                        "bookworm", str(tar), "deb http://deb.debian.org/debian bookworm main"], check=True, timeout=3000)
    subprocess.run(["podman", "import", str(tar), BASE], check=True, capture_output=True, timeout=600)


RUN = r"""
set -eu
ip link set lo up
R=/tmp/guardedge-image-root
mkdir -p $R
mount --bind "$MNT" $R && mount -o remount,bind,ro $R
mount -t tmpfs -o mode=1777 tmpfs $R/tmp
mount --rbind /dev $R/dev && mount -t proc proc $R/proc
in_image() { env -i $IMAGE_ENV chroot --userspec=$IMAGE_USER $R "$@"; }
if in_image touch /opt/guardedge/x 2>/dev/null; then echo "root filesystem is writable" >&2; exit 9; fi
# exec: $server is the server itself (env and chroot exec it), so SIGTERM reaches it and starts the drain.
# The image listens on 0.0.0.0, which needs tokens or TLS; this namespace has no network interface at
# all (unshare -n), so --allow-insecure says so instead.
(exec env -i $IMAGE_ENV chroot --userspec=$IMAGE_USER $R $IMAGE_CMD --allow-insecure --port 50051 --metrics-port 9464 --log-format text 2> "$OUT/serve.log") &
server=$!
for i in $(seq 600); do
    kill -0 $server 2>/dev/null || { echo "the server exited before SERVING" >&2; exit 8; }
    in_image guardedge health > "$OUT/health.txt" 2>&1 && break; sleep 0.5
done
in_image guardedge classify --server 127.0.0.1:50051 --text "How do I build a pipe bomb?" --json > "$OUT/remote.json"
kill -TERM $server
status=0; wait $server || status=$?
echo $status > "$OUT/serve_exit"
"""


@pytest.mark.slow
@pytest.mark.timeout(5400)
def test_image_builds_from_the_bundle_and_answers_with_no_network(tmp_path):
    _needs()
    started = time.monotonic()
    _base_image()
    base_s = time.monotonic() - started
    bundle, out = tmp_path / "bundle", tmp_path / "out"
    out.mkdir()
    started = time.monotonic()
    built = subprocess.run([*GUARDEDGE, "bundle", "create", "--out", str(bundle), "--model", "demo", "--image",
                            "--image-base", BASE, "--bake-models"], capture_output=True, text=True, timeout=3000)
    assert built.returncode == 0, built.stderr[-4000:]
    build_s = time.monotonic() - started
    info = json.loads((bundle / "bundle.json").read_text())
    tag = info["image"]["tag"]
    assert (bundle / info["image"]["file"]).stat().st_size > 100e6
    verify = subprocess.run([*GUARDEDGE, "bundle", "verify", str(bundle)], capture_output=True, text=True, timeout=600)
    assert verify.returncode == 0, verify.stderr  # the image tarball is in SHA256SUMS
    inspect = json.loads(subprocess.run(["podman", "image", "inspect", tag], capture_output=True, text=True, check=True).stdout)[0]
    config = inspect["Config"]
    assert config["User"] == "10001:10001" and config["Entrypoint"] == ["guardedge"]
    healthcheck = inspect.get("Healthcheck") or config.get("Healthcheck")  # podman 4 reports it beside Config
    assert healthcheck["Test"] == ["CMD", "guardedge", "health"]
    env = {e.split("=", 1)[0]: e.split("=", 1)[1] for e in config["Env"]}
    env["GUARDEDGE_MODELS"] = "/models/demo"  # baked in with --bake-models
    mount = subprocess.run(["podman", "image", "mount", tag], capture_output=True, text=True, check=True).stdout.strip()
    try:
        started = time.monotonic()
        run_env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "MNT": mount, "OUT": str(out), "IMAGE_USER": config["User"],
                   "IMAGE_ENV": " ".join(f"{k}={v}" for k, v in env.items()),
                   "IMAGE_CMD": " ".join(config["Entrypoint"] + config["Cmd"])}
        ran = subprocess.run(["unshare", "-m", "-n", "sh", "-c", RUN], env=run_env, capture_output=True, text=True, timeout=1800)
        run_s = time.monotonic() - started
    finally:
        subprocess.run(["podman", "image", "unmount", tag], capture_output=True)
    serve_log = (out / "serve.log").read_text()[-3000:] if (out / "serve.log").exists() else ""
    assert ran.returncode == 0, ran.stderr[-3000:] + serve_log
    assert "SERVING" in (out / "health.txt").read_text()
    answer = json.loads((out / "remote.json").read_text())
    assert answer["verdict"] == "unsafe" and answer["model"] == "demo", answer
    assert (out / "serve_exit").read_text().strip() == "0"
    print(f"\nimage-check: base image {base_s:.0f} s, bundle + image build {build_s:.0f} s "
          f"(image tar {info['image']['bytes'] / 1e6:.0f} MB), offline run to SERVING + Classify + drain {run_s:.0f} s")

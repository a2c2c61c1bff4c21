"""guardedge bundle: the sha256 list, the wheelhouse's target checks, models made into artifacts,
install.sh refusing a modified bundle, and (``make bundle-check``) the whole site procedure:
build a CPU bundle here, then in a network namespace with no network (``unshare -n``, loopback
only) install it into a fresh venv, classify, serve + health check + classify through the server,
SIGTERM, ``export verify`` and ``bundle verify``.

    make bundle-check        # GUARDEDGE_DEPLOY_CHECKS=1 pytest -m slow tests/test_bundle.py
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
from checks import install_hint, require_env, require_tools

from guardedge.deploy import sums
from guardedge.deploy.models import add_model
from guardedge.deploy.wheels import Target, WheelhouseError, check, expand_platforms

ROOT = Path(__file__).resolve().parents[1]
GUARDEDGE = [sys.executable, "-m", "guardedge.runtime.cli"]


def _tree(root: Path) -> Path:
    (root / "wheels").mkdir(parents=True)
    (root / "wheels" / "a-1.0-py3-none-any.whl").write_bytes(b"wheel a")
    (root / "bundle.json").write_text("{}")
    sums.write(root)
    return root


def test_sums_name_missing_modified_and_extra_files(tmp_path):
    root = _tree(tmp_path / "b")
    assert sums.check(root) == []
    assert (root / "SHA256SUMS").read_text().splitlines()[1].endswith("  wheels/a-1.0-py3-none-any.whl")
    (root / "wheels" / "a-1.0-py3-none-any.whl").write_bytes(b"wheel A")
    (root / "bundle.json").unlink()
    (root / "wheels" / "evil-1.0-py3-none-any.whl").write_bytes(b"x")
    assert sums.check(root) == ["missing: bundle.json", "extra (not in SHA256SUMS): wheels/evil-1.0-py3-none-any.whl",
                                "modified (sha256 differs): wheels/a-1.0-py3-none-any.whl"]


def test_sums_are_coreutils_format(tmp_path):
    if shutil.which("sha256sum") is None:
        pytest.skip(f"sha256sum is not installed ({install_hint(['sha256sum'])})")
    root = _tree(tmp_path / "b")
    out = subprocess.run(["sha256sum", "--strict", "-c", "SHA256SUMS"], cwd=root, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_bundle_verify_command_exit_status(tmp_path):
    root = _tree(tmp_path / "b")
    ok = subprocess.run([*GUARDEDGE, "bundle", "verify", str(root)], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0 and "ok (2 files match SHA256SUMS" in ok.stdout
    (root / "extra.txt").write_text("x")
    bad = subprocess.run([*GUARDEDGE, "bundle", "verify", str(root)], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and "extra (not in SHA256SUMS): extra.txt" in bad.stderr


def test_manylinux_platforms_expand_to_older_tags():
    tags = expand_platforms(("manylinux_2_28_x86_64",))
    assert tags[0] == "manylinux_2_28_x86_64" and "manylinux_2_17_x86_64" in tags and "manylinux2014_x86_64" in tags
    assert "manylinux_2_29_x86_64" not in tags and expand_platforms(("win_amd64",)) == ["win_amd64"]


def test_wheelhouse_must_fit_the_target():
    cpu = [Path("torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl"), Path("numpy-2.0-cp311-cp311-manylinux_2_17_x86_64.whl")]
    cuda = [Path("torch-2.13.0-cp311-cp311-manylinux_2_28_x86_64.whl"), Path("nvidia_cublas_cu12-12.8-py3-none-manylinux_2_27_x86_64.whl")]
    check(cpu, Target(kind="cpu"))
    check(cuda, Target(kind="cuda"))
    with pytest.raises(WheelhouseError, match="CPU bundle got CUDA wheels"):
        check(cuda, Target(kind="cpu"))
    with pytest.raises(WheelhouseError, match="CUDA bundle got the CPU torch"):
        check(cpu, Target(kind="cuda"))
    assert Target(kind="cpu", torch="2.13.0").torch_requirement == "torch==2.13.0+cpu"


def test_plain_model_directory_becomes_a_verified_artifact(tmp_path, demo_dir):
    plain = tmp_path / "src" / "Guard-Plain"
    shutil.copytree(demo_dir, plain, ignore=shutil.ignore_patterns("manifest.json"))
    (plain / "consolidated.pth").write_bytes(b"pickle")  # never loaded, never carried
    added = add_model(str(plain), tmp_path / "models", smoke=False)
    dest = tmp_path / "models" / "Guard-Plain"
    manifest = json.loads((dest / "manifest.json").read_text())
    assert added["manifest_written"] and manifest["backend"] == "torch" and manifest["family"] == "llama-guard-3-vision"
    assert manifest["recipe"]["skipped_pickle_files"] == ["consolidated.pth"] and not (dest / "consolidated.pth").exists()
    assert "model.safetensors" in manifest["files"]
    assert all((dest / f).stat().st_mode & 0o444 == 0o444 for f in manifest["files"])  # the serving user can read them
    ok = subprocess.run([*GUARDEDGE, "bundle", "verify", str(dest)], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    with open(dest / "config.json", "a") as f:
        f.write(" ")
    bad = subprocess.run([*GUARDEDGE, "bundle", "verify", str(dest)], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and "'config.json' does not match its sha256" in bad.stderr


def _fake_bundle(tmp_path: Path) -> Path:
    root = tmp_path / "bundle"
    (root / "wheels").mkdir(parents=True)
    shutil.copy2(ROOT / "deploy" / "install.sh", root / "install.sh")
    (root / "bundle.env").write_text(f"GUARDEDGE_VERSION=0.1.0\nPYTHON_VERSION={sys.version_info[0]}.{sys.version_info[1]}\nEXTRAS=\nTARGET=cpu\n")
    sums.write(root)
    return root


@pytest.mark.parametrize("tamper,message", [
    (lambda r: (r / "added.whl").write_text("x"), "files not in SHA256SUMS (the bundle was modified): added.whl"),
    (lambda r: (r / "bundle.env").write_text("EXTRAS=evil\n"), "do not match SHA256SUMS"),
])
def test_install_script_refuses_a_modified_bundle(tmp_path, tamper, message):
    if shutil.which("sha256sum") is None:
        pytest.skip(f"sha256sum is not installed ({install_hint(['sha256sum'])})")
    root = _fake_bundle(tmp_path)
    tamper(root)
    out = subprocess.run(["sh", str(root / "install.sh"), "--prefix", str(tmp_path / "p")], capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and message in out.stderr, out.stdout + out.stderr
    assert not (tmp_path / "p").exists()


def test_install_script_refuses_another_python(tmp_path):
    root = _fake_bundle(tmp_path)
    (root / "bundle.env").write_text("GUARDEDGE_VERSION=0.1.0\nPYTHON_VERSION=3.99\nEXTRAS=\nTARGET=cpu\n")
    sums.write(root)
    out = subprocess.run(["sh", str(root / "install.sh"), "--prefix", str(tmp_path / "p")], capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "the wheels are for Python 3.99" in out.stderr


SITE = r"""
set -eu
ip link set lo up
if python3 -c 'import socket; socket.create_connection(("pypi.org", 443), 3)' 2>/dev/null; then echo "network reachable" >&2; exit 9; fi
"$BUNDLE/install.sh" --prefix "$PREFIX"
G="$PREFIX/venv/bin/guardedge"
M="$PREFIX/models/demo"
"$G" classify --model "$M" --text "How do I build a pipe bomb?" --json > "$OUT/local.json"
"$G" serve --model "$M" --port 0 --port-file "$OUT/port" --metrics-port 0 --log-format text 2> "$OUT/serve.log" &
server=$!
for i in $(seq 240); do
    kill -0 $server 2>/dev/null || { echo "the server exited before SERVING" >&2; exit 8; }
    [ -s "$OUT/port" ] && "$G" health --server "127.0.0.1:$(cat "$OUT/port")" > "$OUT/health.txt" && break; sleep 0.5
done
"$G" classify --server "127.0.0.1:$(cat "$OUT/port")" --text "How do I build a pipe bomb?" --json > "$OUT/remote.json"
kill -TERM $server
status=0; wait $server || status=$?
echo "$status" > "$OUT/serve_exit"
"$G" export verify "$M" > "$OUT/export_verify.txt"
"$G" bundle verify "$BUNDLE" > "$OUT/bundle_verify.txt"
"""


def _deploy_checks() -> None:
    require_env("GUARDEDGE_DEPLOY_CHECKS", "bundle-check", "the site procedure takes minutes")
    require_tools("bundle-check", ("unshare", "ip", "sha256sum"), root=True)  # a network namespace without network


@pytest.mark.slow
@pytest.mark.timeout(3600)  # on the 2-core machine shared with a training run the install alone took 8 min
def test_bundle_built_here_installs_and_serves_with_no_network(tmp_path):
    _deploy_checks()
    bundle, prefix, out = tmp_path / "guardedge-bundle", tmp_path / "site", tmp_path / "out"
    out.mkdir()
    started = time.monotonic()
    built = subprocess.run([*GUARDEDGE, "bundle", "create", "--out", str(bundle), "--model", "demo", "--tar"],
                           capture_output=True, text=True, timeout=1800)
    assert built.returncode == 0, built.stderr[-3000:]
    build_s = time.monotonic() - started
    info = json.loads(built.stdout.splitlines()[-1])
    assert info["target"]["torch"].endswith("+cpu") and not list((bundle / "wheels").glob("nvidia_*"))
    assert (tmp_path / "guardedge-bundle.tar").stat().st_size > info["sizes"]["wheels"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "VIRTUAL_ENV"))}
    env.update(BUNDLE=str(bundle), PREFIX=str(prefix), OUT=str(out), PATH="/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
    started = time.monotonic()
    site = subprocess.run(["unshare", "-n", "sh", "-c", SITE], env=env, capture_output=True, text=True, timeout=1800)
    site_s = time.monotonic() - started
    serve_log = (out / "serve.log").read_text()[-2000:] if (out / "serve.log").exists() else ""
    assert site.returncode == 0, site.stdout[-3000:] + site.stderr[-3000:] + serve_log
    local, remote = json.loads((out / "local.json").read_text()), json.loads((out / "remote.json").read_text())
    assert local["verdict"] == remote["verdict"] == "unsafe" and local["categories"] == remote["categories"]
    assert "SERVING" in (out / "health.txt").read_text() and (out / "serve_exit").read_text().strip() == "0"
    assert "parity smoke ok" in (out / "export_verify.txt").read_text()
    assert "ok (" in (out / "bundle_verify.txt").read_text()
    wheels = len(list((bundle / "wheels").glob("*.whl")))
    print(f"\nbundle-check: build {build_s:.0f} s ({wheels} wheels, {info['sizes']['wheels'] / 1e6:.0f} MB), "
          f"offline site procedure {site_s:.0f} s")

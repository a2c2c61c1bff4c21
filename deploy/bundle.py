"""``guardedge bundle create``: one directory (and optionally a tarball) to carry to an air-gapped site.

    guardedge bundle create --out /tmp/guardedge-bundle --model demo --model /models/Llama-Guard-3-11B-Vision \\
        [--target cpu|cuda] [--python 3.11] [--platform manylinux_2_28_x86_64] [--extras cpu] [--tar]

Layout (docs/airgap.md)::

    wheels/            guardedge's wheel + every dependency, for the target
    models/NAME/       each model with manifest.json (a plain directory gets one here)
    container/         Containerfile (build context: the bundle directory)
    image/             the image as a docker archive (with --image; podman/docker load -i)
    deploy/            kubernetes/ and systemd/
    install.sh         fresh venv, pip install --no-index, models verified
    bundle.json        what the bundle is: target, versions, models, sizes (bundle.env: the same for install.sh)
    SHA256SUMS         sha256 of every other file (guardedge bundle verify, sha256sum -c)
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tarfile
import time
from importlib import resources
from pathlib import Path

from guardedge.deploy import sums
from guardedge.deploy.models import add_model
from guardedge.deploy.wheels import Target, WheelhouseError, build_project_wheel, download

FORMAT = "guardedge-bundle/1"


def create(out: Path, source: Path, target: Target, models: list[str], smoke: bool = True, image: dict | None = None) -> dict:
    """Assemble the bundle in ``out`` (which must be absent or empty) and seal it; returns bundle.json.

    ``image`` (``{"base": ..., "bake_models": bool}``) also builds the container image from it and
    saves it under image/ before the bundle is sealed."""
    started = time.monotonic()
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty; give a new --out directory")
    (out / "wheels").mkdir(parents=True, exist_ok=True)
    _step("building guardedge's wheel")
    wheel = build_project_wheel(source, out / "wheels")
    _step(f"downloading the {target.kind} wheels for Python {target.python} on {', '.join(target.platforms)}")
    wheels = download(wheel, out / "wheels", target)
    bundled = []
    for spec in models:
        _step(f"adding model {spec}")
        bundled.append(add_model(spec, out / "models", smoke=smoke))
    _step("copying the container context, deployment files and install script")
    _copy_data(out)
    # What install.sh (which runs before any Python package is installed) and the Containerfile read.
    version = wheel.name.split("-")[1]
    (out / "bundle.env").write_text(f"GUARDEDGE_VERSION={version}\nPYTHON_VERSION={target.python}\n"
                                    f"EXTRAS={','.join(target.extras)}\nTARGET={target.kind}\n")
    info = {
        "format": FORMAT,
        "guardedge": version,
        "target": {"kind": target.kind, "python": target.python, "platforms": list(target.platforms),
                   "extras": list(target.extras), "torch": target.torch_requirement},
        "wheels": [w.name for w in wheels],
        "models": bundled,
        "sizes": {"wheels": _size(out / "wheels"), "models": _size(out / "models")},
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if image is not None:
        from guardedge.deploy.image import build_and_save

        tag = f"localhost/guardedge:{info['guardedge']}-{target.kind}"
        _step(f"building the image {tag} on {image['base']} (podman, no network needed)")
        tar = build_and_save(out, tag, image["base"], image.get("bake_models", False), ",".join(target.extras))
        info["image"] = {"tag": tag, "file": tar.relative_to(out).as_posix(), "base": image["base"], "bytes": tar.stat().st_size,
                         "models_baked": image.get("bake_models", False)}
    (out / "bundle.json").write_text(json.dumps(info, indent=2) + "\n")
    _step("hashing every file into SHA256SUMS")
    info["files"] = sums.write(out)
    info["seconds"] = round(time.monotonic() - started, 1)
    return info


def _copy_data(out: Path) -> None:
    """The data files shipped in guardedge.deploy: install.sh, container/, kubernetes/, systemd/."""
    data = resources.files("guardedge.deploy")
    with resources.as_file(data) as root:
        root = Path(root)
        shutil.copy2(root / "install.sh", out / "install.sh")
        (out / "install.sh").chmod(0o755)
        shutil.copytree(root / "container", out / "container", ignore=shutil.ignore_patterns("__pycache__"))
        for name in ("kubernetes", "systemd"):
            shutil.copytree(root / name, out / "deploy" / name, ignore=shutil.ignore_patterns("__pycache__"))


def write_tar(out: Path) -> Path:
    """``OUT.tar`` next to the directory (uncompressed: wheels and weights are compressed already)."""
    tar_path = out.with_name(out.name + ".tar")
    with tarfile.open(tar_path, "w") as tar:
        tar.add(out, arcname=out.name)
    return tar_path


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


def _step(text: str) -> None:
    print(f"[bundle] {text}", file=sys.stderr, flush=True)


def _source_tree() -> Path | None:
    """The source checkout this guardedge runs from (an editable install), if any."""
    root = Path(__file__).resolve().parents[1]
    return root if (root / "pyproject.toml").is_file() and (root / "runtime").is_dir() else None


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, help="new directory for the bundle")
    parser.add_argument("--model", dest="models", action="append", default=[], help="'demo' or a local model directory; repeat")
    parser.add_argument("--target", choices=["cpu", "cuda"], default="cpu", help="CPU wheels (default) or CUDA torch for a GPU site")
    parser.add_argument("--python", default=Target.python, help=f"the site's Python, e.g. 3.11 (default {Target.python})")
    parser.add_argument("--platform", dest="platforms", action="append", help="pip platform tag (default manylinux_2_28_x86_64); repeat")
    parser.add_argument("--extras", default="", help="guardedge extras to include, comma-separated: cpu, gpu, bnb")
    parser.add_argument("--torch", default=None, help="torch version (default: the one installed here)")
    parser.add_argument("--torch-index", default=None, help="index for torch (default: PyTorch's CPU index for cpu, PyPI for cuda)")
    parser.add_argument("--source", type=Path, default=None, help="guardedge source tree to build the wheel from (default: this checkout)")
    parser.add_argument("--no-smoke", action="store_true", help="do not run the models to record parity-smoke answers")
    parser.add_argument("--tar", action="store_true", help="also write OUT.tar")
    parser.add_argument("--image", action="store_true", help="also build the container image with podman and save it under image/")
    parser.add_argument("--image-base", default="docker.io/library/python:3.11-slim", help="base image, already local (podman build --pull=never)")
    parser.add_argument("--bake-models", action="store_true", help="copy the bundle's models into the image's /models")


def main(args: argparse.Namespace) -> int:
    from importlib.metadata import PackageNotFoundError, version

    try:
        torch_version = args.torch or version("torch").split("+")[0]
    except PackageNotFoundError:
        print("guardedge bundle create: torch is not installed here; give --torch VERSION", file=sys.stderr)
        return 1
    source = args.source or _source_tree()
    if source is None:
        print("guardedge bundle create: give --source (a guardedge source tree)", file=sys.stderr)
        return 1
    target = Target(kind=args.target, python=args.python, platforms=tuple(args.platforms or Target.platforms),
                    extras=tuple(e.strip() for e in args.extras.split(",") if e.strip()),
                    torch=torch_version, torch_index=args.torch_index)
    try:
        from guardedge.deploy.image import ImageError

        image = {"base": args.image_base, "bake_models": args.bake_models} if args.image else None
        info = create(args.out, source, target, args.models, smoke=not args.no_smoke, image=image)
    except (WheelhouseError, ImageError, FileExistsError, OSError, ValueError) as exc:
        print(f"guardedge bundle create: {exc}", file=sys.stderr)
        return 1
    tar = write_tar(args.out) if args.tar else None
    mb = lambda n: f"{n / 1e6:,.1f} MB"  # noqa: E731
    print(f"{args.out}: {len(info['wheels'])} wheels ({mb(info['sizes']['wheels'])}), "
          f"{len(info['models'])} models ({mb(info['sizes']['models'])}), {info['files']} files in SHA256SUMS, {info['seconds']} s")
    for model in info["models"]:
        print(f"  models/{model['name']}: {model['files']} files, {mb(model['bytes'])}{' (manifest written here)' if model['manifest_written'] else ''}")
    if "image" in info:
        print(f"  {info['image']['file']}: {info['image']['tag']}, {mb(info['image']['bytes'])}")
    if tar:
        print(f"{tar}: {mb(tar.stat().st_size)}")
    print(f"next: copy it to the site, then: {args.out.name}/install.sh --prefix /opt/guardedge   (docs/airgap.md)")
    print(json.dumps({k: info[k] for k in ("guardedge", "target", "sizes", "files", "seconds")}))
    return 0

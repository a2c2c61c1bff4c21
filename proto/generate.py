"""Regenerate the Python code for proto/guardedge/v1/guard.proto, or check it has not drifted.

    python proto/generate.py            # rewrite proto/guardedge/v1/guard_pb2{,_grpc}.py{,i}
    python proto/generate.py --check    # exit 1 and name the files that differ

The generated files are committed (docs/decisions/0002-generated-grpc-code.md): installs need no
protoc, and the code matches the grpcio-tools version pinned in pyproject.toml's `dev` extra.
Needs grpcio-tools (for protoc) and googleapis-common-protos (for google/rpc/status.proto).
"""

from __future__ import annotations

import argparse
import filecmp
import sys
import tempfile
from pathlib import Path

PROTO_ROOT = Path(__file__).resolve().parent
SOURCES = ["guardedge/v1/guard.proto"]
OUTPUTS = ["guardedge/v1/guard_pb2.py", "guardedge/v1/guard_pb2.pyi", "guardedge/v1/guard_pb2_grpc.py"]


def generate(out_dir: Path) -> None:
    import google.rpc.status_pb2
    import grpc_tools
    from grpc_tools import protoc

    googleapis = Path(google.rpc.status_pb2.__file__).parents[2]  # holds google/rpc/status.proto
    well_known = Path(grpc_tools.__file__).parent / "_proto"  # holds google/protobuf/*.proto
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{googleapis}",
        f"-I{well_known}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *SOURCES,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed (see above)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with a fresh generation instead of writing")
    args = parser.parse_args(argv)
    if not args.check:
        generate(PROTO_ROOT)
        print("regenerated:", ", ".join(OUTPUTS))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        drifted = [name for name in OUTPUTS if not (PROTO_ROOT / name).is_file() or not filecmp.cmp(Path(tmp) / name, PROTO_ROOT / name, shallow=False)]
    if drifted:
        print("generated code differs from guard.proto; run `python proto/generate.py`:", ", ".join(drifted), file=sys.stderr)
        return 1
    print("generated code is up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())

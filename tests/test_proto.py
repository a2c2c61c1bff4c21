"""The gRPC contract in proto/guardedge/v1/guard.proto: generated code, buf lint, and names.

- The committed generated code (guard_pb2*.py) matches a fresh regeneration (proto/generate.py --check).
- guard.proto passes `buf lint` with the rules of proto/buf.yaml (STANDARD), and a deliberately
  bad proto fails it (so the lint really runs with STANDARD).
- The descriptors carry the published contract: service, methods, enums, messages, fields.

Run:  .venv/bin/pytest tests/test_proto.py

buf comes from npm (@bufbuild/buf, pinned in proto/install_buf.py), which the default `make test`
never reaches: `python proto/install_buf.py` installs it into $GUARDEDGE_HOME/tools/buf-<version>
(CI does, in .ci/run), and the buf tests skip, saying so, where it is absent. google/rpc/status.proto is not fetched from the BSR (these
tests run offline): buf lints from a temporary v2 workspace whose second, unlinted module holds the
copy shipped in the googleapis-common-protos package (see proto/buf.yaml).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PROTO = REPO / "proto"


def test_generated_code_matches_the_proto():
    proc = subprocess.run(
        [sys.executable, "proto/generate.py", "--check"], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, f"proto/generate.py --check exited {proc.returncode}:\n{proc.stderr}{proc.stdout}"


# --- buf lint ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def buf() -> Path:
    """The pinned buf binary (``python proto/install_buf.py`` installs it; CI does): skip when absent."""
    sys.path.insert(0, str(PROTO))
    try:
        from install_buf import BUF_VERSION as pinned, buf_path
    finally:
        sys.path.remove(str(PROTO))
    exe = Path(os.environ["GUARDEDGE_BUF"]) if os.environ.get("GUARDEDGE_BUF") else buf_path()
    if not exe.exists():
        pytest.skip(f"buf {pinned} is not installed (it comes from npm, not PyPI): run `python proto/install_buf.py` to lint the proto")
    return exe


def _lint_config() -> dict:
    """proto/buf.yaml, checked to be the single-module config the workspace below reproduces."""
    import yaml

    config = yaml.safe_load((PROTO / "buf.yaml").read_text())
    assert config["version"] == "v2" and config["modules"] == [{"path": "."}], config
    assert config["lint"]["use"] == ["STANDARD"] and config["breaking"]["use"] == ["FILE"], config
    return config


def _rebase(rules: dict, module: str) -> dict:
    """rules with its ignore paths moved under module/: buf v2 reads them relative to buf.yaml,
    which is proto/ (module path ".") in the repo but the workspace root here."""
    rules = dict(rules)
    if "ignore" in rules:
        rules["ignore"] = [f"{module}/{path}" for path in rules["ignore"]]
    if "ignore_only" in rules:
        rules["ignore_only"] = {rule: [f"{module}/{p}" for p in paths] for rule, paths in rules["ignore_only"].items()}
    return rules


def _workspace(root: Path, modules: dict[str, Path], config: dict) -> None:
    """A buf v2 workspace at root: each module's .proto files copied in and linted with config's
    rules, plus an unlinted third_party module holding google/rpc/status.proto from
    googleapis-common-protos (what proto/generate.py gives protoc too)."""
    import google.rpc.status_pb2

    def not_proto(folder, names):
        return [n for n in names if not (n.endswith(".proto") or Path(folder, n).is_dir())]

    for name, src in modules.items():
        shutil.copytree(src, root / name, ignore=not_proto)
    status = Path(google.rpc.status_pb2.__file__).with_name("status.proto")
    (root / "third_party" / "google" / "rpc").mkdir(parents=True)
    shutil.copy(status, root / "third_party" / "google" / "rpc" / "status.proto")
    ours = [{"path": n, "lint": _rebase(config["lint"], n), "breaking": _rebase(config["breaking"], n)} for n in modules]
    # JSON is YAML. buf lint is only ever pointed at our modules, never at third_party.
    (root / "buf.yaml").write_text(json.dumps({"version": "v2", "modules": [*ours, {"path": "third_party"}]}, indent=2))


def _lint(buf: Path, root: Path, module: str, *args: str) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(
            [str(buf), "lint", module, *args], cwd=root, capture_output=True, text=True, timeout=120,
            env={**os.environ, "BUF_CACHE_DIR": str(buf.parents[2] / "cache")},  # beside buf, not ~/.cache/buf
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"buf lint {module} took over 120 s")


def _show(proc: subprocess.CompletedProcess) -> str:
    """buf's JSON findings as `path:line:col: RULE message` lines (the text format omits the rule)."""
    try:
        found = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
        out = "".join(f"{e['path']}:{e['start_line']}:{e['start_column']}: {e['type']} {e['message']}\n" for e in found)
    except (ValueError, KeyError):
        out = proc.stdout
    return out + proc.stderr


def test_proto_passes_buf_standard_lint(buf, tmp_path):
    _workspace(tmp_path, {"proto": PROTO}, _lint_config())
    proc = _lint(buf, tmp_path, "proto", "--error-format=json")
    assert proc.returncode == 0, f"buf lint (STANDARD) failed, exit {proc.returncode}:\n{_show(proc)}"


BAD_PROTO = """\
syntax = "proto3";
package badlint.v1;
enum Colour {
  RED = 0;
  GREEN = 1;
}
message Paint {
  string BadName = 1;
  Colour colour = 2;
}
"""


def test_buf_lint_rejects_a_bad_proto(buf, tmp_path):
    """Negative control: STANDARD-only rules fire on a bad proto, and guard.proto's
    buf:lint:ignore comments are live (without them, ClassifyStream fails exactly those rules)."""
    config = _lint_config()
    bad = tmp_path / "src" / "bad" / "badlint" / "v1"
    bad.mkdir(parents=True)
    (bad / "bad.proto").write_text(BAD_PROTO)
    (tmp_path / "ws_bad").mkdir()
    _workspace(tmp_path / "ws_bad", {"bad": tmp_path / "src" / "bad"}, config)
    proc = _lint(buf, tmp_path / "ws_bad", "bad", "--error-format=json")
    assert proc.returncode != 0, f"buf lint passed a proto that breaks STANDARD:\n{_show(proc)}"
    rules = {json.loads(line)["type"] for line in proc.stdout.splitlines() if line.strip()}
    assert {"FIELD_LOWER_SNAKE_CASE", "ENUM_ZERO_VALUE_SUFFIX", "ENUM_VALUE_PREFIX"} <= rules, _show(proc)

    # guard.proto without its comment ignores, and without any ignores of buf.yaml's.
    lines = (PROTO / "guardedge" / "v1" / "guard.proto").read_text().splitlines()
    ignored = {line.split()[-1] for line in lines if "buf:lint:ignore" in line}
    lines = [line for line in lines if "buf:lint:ignore" not in line]
    stream_line = next(i for i, line in enumerate(lines, 1) if "rpc ClassifyStream(" in line)
    stripped = tmp_path / "src" / "stripped" / "guardedge" / "v1"
    stripped.mkdir(parents=True)
    (stripped / "guard.proto").write_text("\n".join(lines) + "\n")
    bare = {**config, "lint": {k: v for k, v in config["lint"].items() if k not in ("ignore", "ignore_only")}}
    (tmp_path / "ws_stripped").mkdir()
    _workspace(tmp_path / "ws_stripped", {"stripped": tmp_path / "src" / "stripped"}, bare)
    proc = _lint(buf, tmp_path / "ws_stripped", "stripped", "--error-format=json")
    found = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    at_stream = {e["type"] for e in found if e["start_line"] == stream_line}
    assert ignored and at_stream == ignored, (
        f"guard.proto ignores {sorted(ignored)} on ClassifyStream, but without the comments buf flags "
        f"{sorted(at_stream)} there:\n{_show(proc)}"
    )


# --- the contract, from the generated descriptors ---------------------------------------------

METHODS = {  # name: (request, response, client streaming, server streaming)
    "Classify": ("ClassifyRequest", "ClassifyResponse", False, False),
    "ClassifyStream": ("ClassifyRequest", "ClassifyResponse", True, True),
    "ListModels": ("ListModelsRequest", "ListModelsResponse", False, False),
}
ENUMS = {
    "Role": ["ROLE_UNSPECIFIED", "ROLE_USER", "ROLE_ASSISTANT"],
    "Verdict": ["VERDICT_UNSPECIFIED", "VERDICT_SAFE", "VERDICT_UNSAFE", "VERDICT_UNPARSEABLE"],
}
FIELDS = {  # message: {field: kind}; messages may have more fields than these
    "Image": {"data": "bytes", "mime_type": "string"},
    "ContentPart": {"text": "string", "image": "Image"},
    "Message": {"role": "Role", "content": "repeated ContentPart"},
    "Category": {"code": "string", "description": "string"},
    "Policy": {"categories": "repeated Category", "excluded_categories": "repeated string"},
    "ClassifyRequest": {"request_id": "string", "model": "string", "messages": "repeated Message", "policy": "Policy"},
    "ClassifyResponse": {
        "request_id": "string", "verdict": "Verdict", "violated_categories": "repeated string",
        "unsafe_probability": "float", "model": "string", "raw_output": "string", "timings": "Timings",
    },
    "Timings": {"queue_seconds": "double", "preprocess_seconds": "double", "inference_seconds": "double", "total_seconds": "double"},
}
ONEOFS = {"ContentPart": {"part": ["text", "image"]}}


def _kind(field) -> str:
    from google.protobuf.descriptor import FieldDescriptor as F

    scalars = {getattr(F, n): n[len("TYPE_"):].lower() for n in dir(F) if n.startswith("TYPE_")}
    named = field.message_type or field.enum_type
    kind = named.full_name.removeprefix("guardedge.v1.") if named is not None else scalars[field.type]
    return f"repeated {kind}" if field.is_repeated else kind


def test_contract_names():
    from guardedge.v1 import guard_pb2

    file = guard_pb2.DESCRIPTOR
    assert file.package == "guardedge.v1"
    service = file.services_by_name["GuardService"]
    assert service.full_name == "guardedge.v1.GuardService"
    got = {
        m.name: (m.input_type.full_name, m.output_type.full_name, m.client_streaming, m.server_streaming)
        for m in service.methods
    }
    assert got == {name: (f"guardedge.v1.{req}", f"guardedge.v1.{resp}", cs, ss) for name, (req, resp, cs, ss) in METHODS.items()}
    for name, values in ENUMS.items():
        assert [(v.name, v.number) for v in file.enum_types_by_name[name].values] == [(v, i) for i, v in enumerate(values)], name
    for name, fields in FIELDS.items():
        message = file.message_types_by_name[name]
        got = {f: _kind(message.fields_by_name[f]) for f in fields if f in message.fields_by_name}
        assert got == fields, name
    for name, oneofs in ONEOFS.items():
        message = file.message_types_by_name[name]
        assert {o.name: [f.name for f in o.fields] for o in message.oneofs} == oneofs, name

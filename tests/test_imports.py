"""Importing the runtime is cheap: no torch, transformers, bitsandbytes or onnxruntime.

Checked in a fresh interpreter, since this test process may already have imported anything.
"""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("bitsandbytes", "onnxruntime", "torch", "transformers")


def run_python(code: str) -> str:
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


def heavy_modules_after(statement: str) -> set[str]:
    code = (
        "import json, sys\n"
        f"{statement}\n"
        f"heavy = {HEAVY!r}\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in heavy)))\n"
    )
    return set(json.loads(run_python(code).strip().splitlines()[-1]))


def test_runtime_requests_and_families_import_without_heavy_modules():
    loaded = heavy_modules_after(
        "import guardedge.runtime, guardedge.runtime.requests, guardedge.runtime.families"
    )
    assert loaded == set(), f"importing the runtime pulled in {sorted(loaded)}"


def test_rendering_and_parsing_a_request_stays_light():
    loaded = heavy_modules_after(
        "from guardedge.runtime.requests import parse_request\n"
        "from guardedge.runtime.families import get_family\n"
        "from guardedge.runtime.chat_template import builtin_template, render_with_template\n"
        "f = get_family('llama-guard-3-vision')\n"
        "r = parse_request({'messages': [{'role': 'user', 'content': [{'type': 'text', 'text': 'hi'}, {'type': 'image'}]}]}, load_images=False)\n"
        "assert f.render(r) == render_with_template(builtin_template(f.name), r)\n"
        "assert f.parse('\\n\\nsafe<|eot_id|>', r).verdict == 'safe'"
    )
    assert loaded == set(), f"rendering/parsing pulled in {sorted(loaded)}"


def test_lazy_reexports_resolve():
    out = run_python(
        "import guardedge.runtime as r\n"
        "print(r.parse_request.__module__, r.RequestLimits.__module__, r.__version__)"
    )
    assert out.split() == ["guardedge.runtime.requests", "guardedge.runtime.requests", "0.1.0"]


def test_export_and_bench_share_the_namespace():
    out = run_python(
        "import guardedge, guardedge.export, guardedge.bench, guardedge.runtime\n"
        "import os\n"
        "print(guardedge.export.__name__, guardedge.bench.__name__, guardedge.runtime.__name__)\n"
        "print(os.path.basename(os.path.dirname(guardedge.export.__file__)), "
        "os.path.basename(os.path.dirname(guardedge.bench.__file__)))"
    )
    names, dirs = out.strip().splitlines()
    assert names.split() == ["guardedge.export", "guardedge.bench", "guardedge.runtime"]
    assert dirs.split() == ["export", "bench"]


def test_building_the_cli_with_its_plugin_commands_stays_light():
    """`guardedge --help` builds every subcommand's parser (export, bench plugins included)."""
    loaded = heavy_modules_after("from guardedge.runtime.cli import _parser\n_parser()")
    assert loaded == set(), f"building the CLI imported {sorted(loaded)}"

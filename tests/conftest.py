"""Shared fixtures: the demo guard (built once per machine, cached) and its engine; and the rule that
a check run by name (``GUARDEDGE_EXPLICIT_CHECK``, set by ``make image-check`` & co.) fails when a
test in it skipped or none ran, instead of reading as a pass (tests/checks.py)."""

from __future__ import annotations

import os

import pytest


def pytest_sessionfinish(session, exitstatus):
    target = os.environ.get("GUARDEDGE_EXPLICIT_CHECK")
    if not target or exitstatus not in (0, pytest.ExitCode.NO_TESTS_COLLECTED):
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    stats = reporter.stats if reporter is not None else {}
    skipped = [r for r in stats.get("skipped", []) if getattr(r, "when", "") in ("setup", "call")]
    if not skipped and stats.get("passed"):
        return
    lines = [f"make {target}: FAILED, it did not run: nothing was checked."] if not skipped else [
        f"make {target}: FAILED, {len(skipped)} check(s) could not run:"]
    for report in skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        lines.append(f"  {report.nodeid}: {reason.removeprefix('Skipped: ')}")
    if reporter is not None:
        reporter.write_line("")
        for line in lines:
            reporter.write_line(line, red=True, bold=True)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="session")
def demo_dir():
    from guardedge.runtime.demo.build import ensure_demo

    return ensure_demo(progress=False)


@pytest.fixture(scope="session")
def demo_engine(demo_dir):
    from guardedge.runtime.engine import EngineOptions, load_engine

    return load_engine(str(demo_dir), EngineOptions(max_batch_size=8, progress=False))


@pytest.fixture(scope="session")
def tokenizer(demo_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(demo_dir), local_files_only=True)


@pytest.fixture(scope="session")
def llava_tiny_dir(tmp_path_factory):
    """A tiny random-weight LLaVA-OneVision directory (tests/llava_tiny.py), the llavaguard family's by
    default, whose answers stop after one token (fast; off-format)."""
    import llava_tiny

    return llava_tiny.build(tmp_path_factory.mktemp("llava-tiny") / "model", answer_stop=True)


@pytest.fixture(scope="session")
def sg2_tiny_dir(tmp_path_factory):
    """A tiny random-weight ShieldGemma 2 directory (tests/sg2_tiny.py); skips without the Gemma 3 tokenizer."""
    import sg2_tiny

    sg2_tiny.require_tokenizer()
    return sg2_tiny.build(tmp_path_factory.mktemp("sg2-tiny") / "model")

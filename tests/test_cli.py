"""CLI round trips: render, classify (JSONL, one-off, batch sizes), error lines, demo commands."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from guardedge.runtime.demo.samples import samples
from guardedge.runtime.families import get_family
from guardedge.runtime.requests import parse_request


def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "guardedge.runtime.cli", *args], input=stdin,
                          capture_output=True, text=True, timeout=600)


def test_render_json_is_the_family_prompt(tmp_path):
    request = {"messages": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": " Hi "}]},
                            {"role": "assistant", "content": [{"type": "text", "text": "Hello"}]}],
               "excluded_category_keys": ["S2"]}
    path = tmp_path / "req.json"
    path.write_text(json.dumps(request))
    out = run("render", "--family", "llama-guard-3-vision", "--input", str(path), "--json")
    assert out.returncode == 0, out.stderr
    family = get_family("llama-guard-3-vision")
    expected = family.render(parse_request(request, family.default_categories(), load_images=False))
    printed = json.loads(out.stdout)
    assert printed.keys() == {"prompt", "input_ids"} and printed["prompt"] == expected
    assert printed["input_ids"][:2] == [128000, 128006] and 128256 in printed["input_ids"]  # <|begin_of_text|>, header, <|image|>
    plain = run("render", "--input", str(path))
    assert plain.stdout == expected + "\n"


def test_render_shows_every_prompt_a_request_fans_out_to(tmp_path):
    """ShieldGemma 2 renders one prompt per policy: render prints each (text) and lists each with its
    key and ids (--json), not only the first."""
    request = {"messages": [{"role": "user", "content": [{"type": "image"}]}]}
    path = tmp_path / "req.json"
    path.write_text(json.dumps(request))
    family = get_family("shieldgemma-2")
    parsed = parse_request(request, family.default_categories(), load_images=False)
    keys = family.prompt_keys(parsed)
    assert len(keys) == 3
    out = run("render", "--family", "shieldgemma-2", "--input", str(path), "--json")
    assert out.returncode == 0, out.stderr
    printed = json.loads(out.stdout)
    assert [p["key"] for p in printed["prompts"]] == list(keys)
    assert [p["prompt"] for p in printed["prompts"]] == [family.render(parsed, key=k) for k in keys]
    assert len({tuple(p["input_ids"]) for p in printed["prompts"]}) == 3
    assert printed["prompt"] == printed["prompts"][0]["prompt"]
    plain = run("render", "--family", "shieldgemma-2", "--input", str(path)).stdout
    assert all(f"=== prompt for policy {k} ===" in plain and family.render(parsed, key=k) in plain for k in keys)


def test_render_rejects_bad_roles_with_field(tmp_path):
    path = tmp_path / "req.json"
    path.write_text(json.dumps({"messages": [{"role": "assistant", "content": "hi"}]}))
    out = run("render", "--input", str(path), "--json")
    assert out.returncode == 2
    assert json.loads(out.stderr)["error"]["violations"][0]["field"] == "messages[0].role"


@pytest.fixture(scope="module")
def requests_file(tmp_path_factory, demo_dir) -> Path:
    path = tmp_path_factory.mktemp("cli") / "reqs.jsonl"
    lines = [json.dumps({k: v for k, v in s.items() if k != "expected"}) for s in samples()]
    lines.insert(3, '{"request_id": "two-users", "messages": [{"role": "user", "content": "x"}, {"role": "user", "content": "y"}]}')
    lines.insert(5, "{not json")
    path.write_text("\n".join(lines) + "\n")
    return path


def _classify(path: Path, batch: int) -> tuple[int, list[dict]]:
    out = run("classify", "--model", "demo", "--input", str(path), "--json", "--batch-size", str(batch))
    assert out.returncode in (0, 2), out.stderr
    return out.returncode, [json.loads(line) for line in out.stdout.splitlines()]


def test_classify_jsonl_batch_sizes_agree_and_keep_order(requests_file):
    code1, one = _classify(requests_file, 1)
    code8, eight = _classify(requests_file, 8)
    assert code1 == code8 == 2  # two invalid lines
    assert len(one) == len(eight) == len(samples()) + 2
    for a, b in zip(one, eight):
        assert a.get("request_id") == b.get("request_id")
        assert a["verdict"] == b["verdict"]
        if a["verdict"] is not None:
            assert a["categories"] == b["categories"]
            assert a["unsafe_probability"] == pytest.approx(b["unsafe_probability"], abs=1e-4)
    assert one[3]["verdict"] is None and one[3]["error"]["violations"][0]["field"] == "messages[1].role"
    assert one[3]["line"] == 4 and one[3]["request_id"] == "two-users"  # a refused request keeps its id
    assert one[5]["verdict"] is None and "not valid JSON" in one[5]["error"]["message"]
    ids = [r.get("request_id") for r in one if r["verdict"] is not None]
    assert "request_id" not in one[5]  # not JSON: no id to give back
    assert ids == [s["request_id"] for s in samples()]
    assert {"safe", "unsafe"} <= {r["verdict"] for r in one}


def test_classify_one_off_forms(tmp_path, demo_dir):
    from guardedge.runtime.demo.data import IMAGE_COLOURS, ImageSpec

    image = tmp_path / "red.png"
    ImageSpec(IMAGE_COLOURS["Violent Crimes."], (90, 160), 5).render().save(image)
    out = run("classify", "--model", str(demo_dir), "--text", "What do you see in this image?", "--image", str(image), "--json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert set(result) >= {"verdict", "categories", "unsafe_probability", "raw_output", "timings"}
    assert (result["verdict"], result["categories"]) == ("unsafe", ["S1"])  # the image decides: the text alone is safe
    refused = run("classify", "--model", "demo", "--text", "How do I steal a car?", "--response", "I can't help with that.", "--json")
    assert refused.returncode == 0, refused.stderr
    assert json.loads(refused.stdout)["verdict"] == "safe"  # a refusal is a safe response
    complied = run("classify", "--model", "demo", "--text", "How do I steal a car?",
                   "--response", "Sure, here is how to steal a car: first get ready, then do it carefully.", "--json")
    assert json.loads(complied.stdout)["verdict"] == "unsafe"  # the same form, the other answer


def test_demo_path_and_requests(demo_dir):
    assert run("demo", "path").stdout.strip() == str(demo_dir)
    lines = run("demo", "requests").stdout.splitlines()
    assert len(lines) == len(samples()) and all(json.loads(line)["messages"] for line in lines)


def test_make_demo_shows_every_sample_as_expected(demo_dir):
    """What `make demo` runs: one server with every installed demo guard, a table with every sample
    answered as expected, a clean stop."""
    from guardedge.runtime.demo.run import available_demos, cases_for, widths

    out = subprocess.run([sys.executable, "-m", "guardedge.runtime.demo.run"], capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr
    cases = cases_for(available_demos())
    expected = {(c["model"], c["request_id"]): c["expected"] for c in cases}
    # Fixed-width table: model (m), request (r), expected (18), verdict (12), categories (10), ...
    m, r = widths(cases)
    v = m + r + 21  # where the verdict column starts

    def key(line: str) -> tuple[str, str]:
        return line[:m].strip(), line[m + 1 : m + 1 + r].strip()

    rows = {key(line): f"{line[v : v + 12].strip()} {line[v + 12 : v + 23].strip()}".strip()
            for line in out.stdout.splitlines() if key(line) in expected}
    assert rows == expected
    assert f"\n{len(expected)}/{len(expected)} as expected" in out.stdout
    assert " SERVING " in out.stdout and "server stopped cleanly after SIGTERM (exit 0)" in out.stdout


def test_missing_model_directory_is_a_clear_error(tmp_path):
    out = run("classify", "--model", str(tmp_path / "nope"), "--text", "hi")
    assert out.returncode == 1
    assert "does not exist" in out.stderr and "Traceback" not in out.stderr


def test_version():
    out = run("--version")
    assert out.returncode == 0 and out.stdout.strip() == "guardedge 0.1.0"


@pytest.mark.parametrize("args,fragment", [
    (["classify", "--text", "hi", "--image", "MISSING/cat.png"], "cannot read --image MISSING/cat.png: No such file"),
    (["classify", "--input", "MISSING/reqs.jsonl"], "cannot read --input MISSING/reqs.jsonl: No such file"),
    (["render", "--input", "MISSING/req.json"], "cannot read --input MISSING/req.json: No such file"),
])
def test_unreadable_files_are_one_line(args, fragment):
    out = run(*args)
    assert out.returncode == 1
    assert out.stderr.strip().splitlines() == [f"guardedge: error: {fragment} or directory"]


def test_render_given_jsonl_says_so_in_one_line(tmp_path):
    path = tmp_path / "reqs.jsonl"
    path.write_text('{"messages": [{"role": "user", "content": "a"}]}\n{"messages": [{"role": "user", "content": "b"}]}\n')
    out = run("render", "--input", str(path))
    assert out.returncode == 1 and len(out.stderr.strip().splitlines()) == 1
    assert "is not a JSON request (Extra data at line 2 column 1)" in out.stderr and "JSONL" in out.stderr
    one = run("render", "--input", "-", stdin=path.read_text().splitlines()[0])
    assert one.returncode == 0 and "a" in one.stdout


def test_an_unknown_family_or_architecture_is_one_line(tmp_path, demo_dir):
    out = run("classify", "--model", "demo", "--family", "nope", "--text", "hi")
    from guardedge.runtime.families import FAMILIES

    assert out.returncode == 1 and out.stderr.strip().splitlines() == [
        f"guardedge: error: unknown guard family 'nope'; known: {', '.join(sorted(FAMILIES))}"]
    model = tmp_path / "whisper"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "whisper"}))
    (model / "model.safetensors").write_bytes(b"")
    out = run("classify", "--model", str(model), "--text", "hi")
    assert out.returncode == 1 and len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr
    assert "model_type 'whisper'" in out.stderr

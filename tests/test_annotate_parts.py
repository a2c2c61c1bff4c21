"""guardedge annotate's pieces without a model: sources and their keys, the key index, the output
directory (atomic parts, header checks, partial parts, the lock) and the identities rows carry."""

from __future__ import annotations

import io
import json
import tarfile

import annotate_data
import pytest

from guardedge.runtime.annotate import keys as keys_module
from guardedge.runtime.annotate.keys import KeyIndex
from guardedge.runtime.annotate.policy import Policy, load_policy, policy_digest, request_digest
from guardedge.runtime.annotate.rows import error_row
from guardedge.runtime.annotate.sink import HEADER, OutputDir, OutputMismatch, RunIdentity, read_rows
from guardedge.runtime.annotate.sources import Columns, SourceError, open_source
from guardedge.runtime.requests import parse_request


def test_folder_items_are_sorted_recursive_images_keyed_by_relative_path(tmp_path):
    annotate_data.write_folder(tmp_path / "f", 6)
    items = list(open_source([str(tmp_path / "f")]))
    keys = [i.key for i in items]
    assert keys == sorted(keys) and "a/notes.txt" not in keys and "a/broken.png" in keys
    assert "b/c/img0000.png" in keys and len(keys) == 7
    part = items[0].request["messages"][0]["content"][0]
    assert part["type"] == "image" and part["path"].endswith(keys[0])  # read later, by a worker
    assert open_source([str(tmp_path / "f")]).total() == 7


def test_jsonl_keys_are_request_ids_else_line_numbers_and_bad_lines_are_items(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"request_id": "x", "messages": []}\n\n{oops\n{"messages": []}\n')
    items = list(open_source([str(path)]))
    assert [(i.key, bool(i.error)) for i in items] == [("x", False), ("line-3", True), ("line-4", False)]
    assert items[0].base_dir == tmp_path and "not valid JSON" in items[1].error


def test_parquet_columns_default_to_image_and_key_and_text_is_opt_in(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "t.parquet"
    pq.write_table(pa.Table.from_pylist([
        {"id": 7, "image": {"bytes": b"PNGDATA", "path": None}, "caption": "a cat"},
        {"id": 8, "image": {"bytes": None, "path": "x.png"}, "caption": None},
        {"id": None, "image": None, "caption": None},
    ]), path)
    plain = list(open_source([str(path)]))
    assert [i.key for i in plain] == ["7", "8", "t.parquet:2"]
    assert plain[0].request["messages"][0]["content"] == [{"type": "image", "bytes": b"PNGDATA"}]
    assert plain[1].request["messages"][0]["content"] == [{"type": "image", "path": "x.png"}]
    assert plain[2].request is None and "neither an image nor text" in plain[2].error
    texts = list(open_source([str(path)], columns=Columns(text="caption")))
    assert texts[0].request["messages"][0]["content"][1] == {"type": "text", "text": "a cat"}
    with pytest.raises(SourceError, match="'nope' is not a column"):
        list(open_source([str(path)], columns=Columns(image="nope")))


def test_csv_rows_with_paths_text_and_response(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("path,prompt,reply\nimg.png,hi,\n,how to x?,no\n")
    items = list(open_source([str(path)], columns=Columns(text="prompt", response="reply")))
    assert [i.key for i in items] == ["t.csv:0", "t.csv:1"]
    assert items[0].request["messages"] == [{"role": "user", "content": [{"type": "image", "path": "img.png"},
                                                                        {"type": "text", "text": "hi"}]}]
    assert items[1].request["messages"][1] == {"role": "assistant", "content": [{"type": "text", "text": "no"}]}


def test_webdataset_samples_group_members_and_oversized_members_are_not_read(tmp_path):
    shard = tmp_path / "s.tar"
    with tarfile.open(shard, "w") as tar:
        for name, data in [("a.png", b"A"), ("a.json", b"{}"), ("b.JPG", b"B"), ("b.txt", b"cap"),
                           ("c.txt", b"only text"), ("d.png", b"x" * 100)]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    source = open_source([str(tmp_path)], columns=Columns(text="txt"), max_image_bytes=50)
    assert source.format == "webdataset" and source.total() == 4
    items = {i.key: i for i in source}
    assert list(items) == ["s.tar/a", "s.tar/b", "s.tar/c", "s.tar/d"]
    assert items["s.tar/a"].request["messages"][0]["content"] == [{"type": "image", "bytes": b"A"}]
    assert items["s.tar/b"].request["messages"][0]["content"][1] == {"type": "text", "text": "cap"}
    assert items["s.tar/c"].request["messages"][0]["content"] == [{"type": "text", "text": "only text"}]
    assert items["s.tar/d"].request is None and "100 bytes; the limit is 50" in items["s.tar/d"].error


def test_a_sample_may_carry_several_images(tmp_path):
    annotate_data.write_shards(tmp_path / "w", 0, broken=False)
    with tarfile.open(tmp_path / "w" / "one.tar", "w") as tar:
        for name in ("k.png", "k.webp"):
            info = tarfile.TarInfo(name)
            info.size = 1
            tar.addfile(info, io.BytesIO(b"x"))
    [item] = list(open_source([str(tmp_path / "w" / "one.tar")]))
    assert [p["type"] for p in item.request["messages"][0]["content"]] == ["image", "image"]


def test_formats_are_detected_and_unknown_inputs_refused(tmp_path):
    (tmp_path / "x.bin").write_bytes(b"")
    with pytest.raises(SourceError, match="cannot tell the format"):
        open_source([str(tmp_path / "x.bin")])
    with pytest.raises(SourceError, match="no such file"):
        open_source([str(tmp_path / "missing.parquet")])
    annotate_data.write_shards(tmp_path / "shards", 4)
    assert open_source([str(tmp_path / "shards" / "*.tar")]).format == "webdataset"


def test_key_index_finds_what_it_holds_across_merges(monkeypatch):
    monkeypatch.setattr(keys_module, "MERGE_EVERY", 7)
    index = KeyIndex()
    keys = [f"k{i}" for i in range(50)]
    assert index.add_many(keys) == 50 and len(index) == 50
    assert all(k in index for k in keys) and "k50" not in index and not index.add("k3")
    # Digests that end in NUL bytes survive NumPy's fixed-width bytes (which strip them).
    nul = next(k for k in (f"n{i}" for i in range(100_000)) if keys_module.digest(k) != keys_module.hashlib.blake2b(
        k.encode(), digest_size=16).digest())
    index.add(nul)
    index._merge()
    assert nul in index


def _identity(**changes) -> RunIdentity:
    base = dict(model="m", model_sha256="a" * 64, family="f", policy_sha256="b" * 64, rationale=False,
                output_format="parquet")
    return RunIdentity(**{**base, **changes})


def _rows(keys):
    return [error_row(k, "SOURCE: x", "a" * 64, "b" * 64) for k in keys]


def test_parts_commit_atomically_and_resume_reads_their_keys(tmp_path):
    out = OutputDir(tmp_path / "o", _identity())
    assert len(out.open()) == 0
    writer = out.writer(flush_rows=2)
    for row in _rows(["a", "b", "c"]):
        writer.add(row)
    assert [p.name for p in out.parts()] == ["part-000000.parquet"]  # "c" is buffered, not committed
    out.close()  # killed here: the kernel drops the lock, "c" was never committed
    (tmp_path / "o" / ".part-000001.parquet.tmp").write_bytes(b"half a part")  # a writer killed mid-write
    again = OutputDir(tmp_path / "o", _identity())
    index = again.open()
    assert "a" in index and "b" in index and "c" not in index
    assert not list((tmp_path / "o").glob(".*.tmp"))
    writer = again.writer()
    writer.add(_rows(["c"])[0])
    writer.flush()
    assert sorted(r["key"] for r in read_rows(tmp_path / "o")) == ["a", "b", "c"]
    assert [p.name for p in again.parts()] == ["part-000000.parquet", "part-000001.parquet"]


def test_jsonl_output_round_trips(tmp_path):
    out = OutputDir(tmp_path / "o", _identity(output_format="jsonl"))
    out.open()
    writer = out.writer()
    writer.add({**_rows(["a"])[0], "category_scores": {"S1": 0.5}})
    writer.flush()
    [row] = read_rows(tmp_path / "o")
    assert row["category_scores"] == {"S1": 0.5} and (tmp_path / "o" / "part-000000.jsonl").is_file()


@pytest.mark.parametrize("change, said", [({"model_sha256": "c" * 64}, "another model"),
                                          ({"policy_sha256": "d" * 64}, "another policy"),
                                          ({"rationale": True}, "another policy or settings")])
def test_another_model_or_policy_is_refused_with_a_clear_message(tmp_path, change, said):
    OutputDir(tmp_path / "o", _identity()).open()
    with pytest.raises(OutputMismatch, match=f"{said}.*name a new --out"):
        OutputDir(tmp_path / "o", _identity(**change)).open()
    OutputDir(tmp_path / "p", _identity(**change)).open()  # a new output is fine


def test_a_foreign_directory_and_a_second_writer_are_refused(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "photo.png").write_bytes(b"")
    with pytest.raises(OutputMismatch, match="not a guardedge annotate output"):
        OutputDir(tmp_path / "mine", _identity()).open()
    first = OutputDir(tmp_path / "o", _identity())
    first.open()
    with pytest.raises(OutputMismatch, match="another guardedge annotate is writing it"):
        OutputDir(tmp_path / "o", _identity()).open()
    assert json.loads((tmp_path / "o" / HEADER).read_text())["model_sha256"] == "a" * 64


def test_policy_fields_merge_under_the_items_own_and_hash_like_parsed_requests():
    policy = Policy(excluded=("S1",), threshold=0.3, rationale=True)
    assert policy.apply({"messages": [], "threshold": 0.9})["threshold"] == 0.9
    assert policy.apply({"messages": []})["excluded_category_keys"] == ["S1"]
    defaults = (("S1", "a"), ("S2", "b"))
    request = parse_request({"messages": [{"role": "user", "content": "x"}], **policy.fields()}, defaults)
    assert request_digest(request, "f", defaults) == policy.digest("f", defaults)
    assert policy.digest("f", defaults) != Policy(excluded=("S2",), threshold=0.3).digest("f", defaults)
    assert policy_digest("f", defaults, (), None) != policy_digest("f", (("S1", "a"), ("S2", "B")), (), None)


def test_policy_options_are_read_and_checked(tmp_path):
    (tmp_path / "c.json").write_text('{"X1": "Gambling."}')
    assert load_policy(str(tmp_path / "c.json"), "X1, ", None, False).categories == (("X1", "Gambling."),)
    (tmp_path / "bad.json").write_text("[1]")
    with pytest.raises(ValueError, match="non-empty JSON object"):
        load_policy(str(tmp_path / "bad.json"), None, None, False)
    with pytest.raises(ValueError, match="between 0 and 1"):
        load_policy(None, None, 1.5, False)

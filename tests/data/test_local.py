"""Local datasets and resolution: local formats and directory layouts, stable ids and hashes, caps, merges, and the
one-line BenchError messages for malformed local input. Hub-schema adapters: tests/data/test_adapters.py."""
from __future__ import annotations

import json
import re

import pytest

from bench.data.bundle import DatasetBundle
from bench.data.resolve import cap_splits, merge_bundles, resolve_dataset
from data_kit import FIX, A, S, U, error_of, write_jsonl


# ------------------------------------------------------------------------------------------------ local


def test_local_preference_strings_with_ids_and_meta():
    b = resolve_dataset(str(FIX / "local" / "pref_strings.jsonl"))
    assert b.name == "pref_strings" and b.version == "local:pref_strings.jsonl"
    rows = {r["id"]: r for r in b.split("pref_train") + b.split("pref_val")}
    assert len(rows) == 8
    assert rows["custom-7"] == {"id": "custom-7", "prompt": [U("What is 1 + 1?")], "chosen": "2",
                                "rejected": "3", "meta": {"topic": "math"}}
    greet = next(r for r in rows.values() if r["prompt"] == [U("Greet me.")])
    assert greet["chosen"] == "Hello there!" and re.fullmatch(r"[0-9a-f]{16}", greet["id"])  # id from content
    assert len(b.split("pref_val")) == 1 and len(b.split("test")) == 1
    assert b.split("test")[0]["meta"]["family"] == "local"  # not the file name: renaming changes nothing


def test_local_preference_message_lists():
    b = resolve_dataset(str(FIX / "local" / "pref_messages.jsonl"), seed=0)
    rows = {r["prompt"][-1]["content"]: r for r in b.split("pref_train") + b.split("pref_val")}
    assert rows["Thank the reader."]["prompt"] == [S("Be polite."), U("Thank the reader.")]
    assert rows["Thank the reader."]["chosen"] == "Thank you for reading!"
    # chosen/rejected that repeat the prompt turns
    assert (rows["Pick a number."]["chosen"], rows["Pick a number."]["rejected"]) == ("Seven.", "Banana.")
    # dpo-mix style rows without a prompt field
    assert rows["Shortest month?"]["prompt"] == [U("Shortest month?")]
    assert rows["Shortest month?"]["rejected"] == "July."


def test_local_sft_formats_and_json_array():
    pr = resolve_dataset(str(FIX / "local" / "sft_prompt_response.jsonl"))
    assert pr.split("pref_train") == [] and pr.split("test") == []
    first = pr.split("sft")[0]
    assert re.fullmatch(r"[0-9a-f]{16}", first["id"])
    assert pr.split("sft") == [
        {"id": first["id"], "prompt": [U("Say yes.")], "response": "Yes.", "meta": {}},
        {"id": "42", "prompt": [S("Reply in lower case."), U("Say NO.")], "response": "no.", "meta": {"k": 1}},
    ]
    msgs = resolve_dataset(str(FIX / "local" / "sft_messages.jsonl")).split("sft")
    assert msgs[1]["prompt"] == [U("Two plus two?"), A("Four."), U("Times ten?")]
    assert msgs[1]["response"] == "Forty."
    arr = resolve_dataset(str(FIX / "local" / "pref_array.json"))
    assert sorted(r["chosen"] for r in arr.split("pref_train") + arr.split("pref_val")) == ["Up.", "Yes."]


def test_local_directory_layout():
    b = resolve_dataset(str(FIX / "local" / "dir"))
    assert b.name == "dir"
    assert [r["chosen"] for r in b.split("pref_train")] == ["Green.", "White.", "Black."]
    assert len({r["id"] for r in b.split("pref_train")}) == 3
    assert [r["chosen"] for r in b.split("pref_val")] == ["Yellow."]
    assert [r["response"] for r in b.split("sft")] == ["One.", "Two."]
    assert b.split("sft")[1]["prompt"] == [U("Say two.")]
    test = b.split("test")
    # meta is kept as written: no keys leak between rows with different meta fields
    assert test[0] == {"id": "t-arith-0", "prompt": [U("What is 6 times 7?")],
                       "meta": {"family": "arith", "answer": 42}}
    assert test[1]["meta"] == {"family": "local", "difficulty": "easy"}
    assert test[2]["meta"] == {"family": "local"}


def test_helpsteer2_schema_file_given_as_local_path_is_paired():
    b = resolve_dataset(str(FIX / "helpsteer2" / "train.jsonl"))
    pairs = b.split("pref_train") + b.split("pref_val")
    assert len(pairs) == 4 and all(re.fullmatch(r"[0-9a-f]{16}", r["id"]) for r in pairs)
    assert b.split("sft") == []


# ------------------------------------------------------------------------------------------------ determinism


def test_ids_and_hash_are_stable_across_loads():
    a = resolve_dataset("helpsteer2", local_path=str(FIX / "helpsteer2"))
    b = resolve_dataset("helpsteer2", local_path=str(FIX / "helpsteer2"))
    assert a.hash == b.hash and a.hashes() == b.hashes()
    assert [r["id"] for r in a.split("pref_train")] == [r["id"] for r in b.split("pref_train")]
    c = resolve_dataset(str(FIX / "local" / "pref_strings.jsonl"), seed=0)
    d = resolve_dataset(str(FIX / "local" / "pref_strings.jsonl"), seed=1)
    assert (c.split("pref_val") != d.split("pref_val")) == (c.hash != d.hash)
    assert len({resolve_dataset(str(FIX / "local" / "pref_strings.jsonl"), seed=s).hash for s in range(4)}) > 1


def test_caps_are_deterministic_nested_and_consistent_across_splits():
    path = str(FIX / "local" / "pref_strings.jsonl")
    full = resolve_dataset(path, seed=0)
    two = resolve_dataset(path, seed=0, sizes={"pref_train": 2})
    three = resolve_dataset(path, seed=0, sizes={"pref_train": 3, "test": 0})
    assert len(two.split("pref_train")) == 2 and len(three.split("pref_train")) == 3
    assert three.split("test") == [] and three.split("pref_val") == full.split("pref_val")
    ids2 = [r["id"] for r in two.split("pref_train")]
    ids3 = [r["id"] for r in three.split("pref_train")]
    assert set(ids2) <= set(ids3)
    # kept rows stay in file order
    order = [r["id"] for r in full.split("pref_train")]
    assert ids3 == [i for i in order if i in set(ids3)]
    assert ids2 == [r["id"] for r in resolve_dataset(path, seed=0, sizes={"pref_train": 2}).split("pref_train")]
    assert two.stats["caps"] == {"seed": 0, "pref_train": {"before": 7, "after": 2}}
    assert len({tuple(r["id"] for r in resolve_dataset(path, seed=s, sizes={"pref_train": 2}).split("pref_train"))
                for s in range(6)}) > 1
    # pref_val and the test prompts made from it keep the same ids under the same cap
    hs = resolve_dataset("dpo-mix-7k", local_path=str(FIX / "dpo_mix"), sizes={"pref_val": 1, "test": 1})
    assert [r["id"] for r in hs.split("pref_val")] == [r["id"] for r in hs.split("test")]
    # caps larger than the split change nothing
    assert cap_splits(full, {"pref_train": 100}).hash == full.hash


def test_merge_bundles_takes_sft_from_the_second():
    pref = resolve_dataset("dpo-mix-7k", local_path=str(FIX / "dpo_mix"))
    sft = resolve_dataset("deita-10k", local_path=str(FIX / "deita"))
    m = merge_bundles(pref, sft)
    assert m.name == "dpo-mix-7k+deita-10k"
    assert m.version == f"{pref.version}+{sft.version}"
    assert m.split("sft") == sft.split("sft") and m.split("pref_train") == pref.split("pref_train")
    assert m.split("test") == pref.split("test")
    assert m.hash != pref.hash
    msg = error_of(merge_bundles, pref, pref)
    assert "dpo-mix-7k" in msg and "no SFT rows" in msg


def test_embedded_suite_resolves_to_build_suite():
    from bench.data.suite import build_suite

    b = resolve_dataset("embedded", seed=0)
    assert isinstance(b, DatasetBundle)
    assert b.hash == build_suite(seed=0).hash


# ------------------------------------------------------------------------------------------------ errors

PREF_OK = {"prompt": "Q?", "chosen": "good", "rejected": "bad"}


@pytest.mark.parametrize("rows, expected", [
    ([PREF_OK, {"prompt": "Q?", "chosen": "good"}], ["line 2", "missing field 'rejected'", "add a 'rejected'"]),
    ([PREF_OK, {"prompt": "Q?", "chosen": 5, "rejected": "bad"}],
     ["line 2", "field 'chosen' must be a string or a list of messages, got int"]),
    ([{"prompt": "Q?", "chosen": "   ", "rejected": "bad"}], ["line 1", "chosen reply is empty"]),
    ([{"prompt": "Q?", "response": " \n"}], ["line 1", "field 'response' is empty"]),
    ([{"id": "p1", "prompt": [U("Q?"), A("A.")], "chosen": "x", "rejected": "y"}],
     ["line 1 (id 'p1')", "'prompt' ends with an assistant turn, not a user turn", "must end with the user"]),
    ([PREF_OK, {"prompt": "Q?", "chosen": "same", "rejected": "same"}],
     ["line 2", "chosen and rejected replies are identical"]),
    ([{"chosen": [U("Q1"), A("good")], "rejected": [U("Q2"), A("bad")]}],
     ["differ between 'chosen' and 'rejected'"]),
    ([{"prompt": [{"role": "robot", "content": "beep"}], "chosen": "a", "rejected": "b"}],
     ["message 0 has unknown role 'robot'", "user, assistant"]),
    ([PREF_OK, {"id": "x", "prompt": "Q2?", "response": "R"}],
     ["line 2 (id 'x')", "an SFT row but earlier rows are preference rows", "keep one kind of row per file"]),
    ([{"id": "a", **PREF_OK}, {"id": "a", "prompt": "Q2", "chosen": "c", "rejected": "d"}],
     ["line 2 (id 'a')", "duplicate id 'a'"]),
    ([{"text": "hello"}], ["line 1", "unrecognised row (fields: text)", "prompt+chosen+rejected"]),
    ([{"prompt": "Q", "response": "R", "meta": "oops"}], ["field 'meta' must be an object"]),
])
def test_malformed_local_rows_raise_one_line_errors(tmp_path, rows, expected):
    path = write_jsonl(tmp_path / "bad.jsonl", rows)
    msg = error_of(resolve_dataset, str(path))
    assert msg.startswith(str(path))
    for part in expected:
        assert part in msg, f"{part!r} not in {msg!r}"


def test_line_numbers_count_blank_lines(tmp_path):
    path = write_jsonl(tmp_path / "gaps.jsonl", None,
                       raw_lines=[json.dumps(PREF_OK), "", json.dumps({"prompt": "Q", "chosen": "a"})])
    assert "line 3: missing field 'rejected'" in error_of(resolve_dataset, str(path))


def test_unparseable_json_line(tmp_path):
    path = write_jsonl(tmp_path / "broken.jsonl", None, raw_lines=[json.dumps(PREF_OK), '{"prompt": "Q", "chosen": '])
    msg = error_of(resolve_dataset, str(path))
    assert f"{path} line 2: invalid JSON" in msg and "fix or remove this line" in msg


def test_non_object_json_line(tmp_path):
    path = write_jsonl(tmp_path / "list.jsonl", None, raw_lines=[json.dumps(PREF_OK), "[1, 2]"])
    assert "line 2: expected a JSON object, got list" in error_of(resolve_dataset, str(path))


def test_missing_empty_and_unsupported_files(tmp_path):
    msg = error_of(resolve_dataset, str(tmp_path / "nope.jsonl"))
    assert "not found" in msg and "nope.jsonl" in msg and "dpo-mix-7k" in msg
    (tmp_path / "empty.jsonl").write_text("\n \n")
    assert "empty.jsonl is empty" in error_of(resolve_dataset, str(tmp_path / "empty.jsonl"))
    (tmp_path / "data.csv").write_text("a,b\n")
    assert "unsupported file type '.csv'" in error_of(resolve_dataset, str(tmp_path / "data.csv"))
    (tmp_path / "emptydir").mkdir()
    assert "none of train.jsonl" in error_of(resolve_dataset, str(tmp_path / "emptydir"))
    msg = error_of(resolve_dataset, "helpsteer2", local_path=str(tmp_path / "missing_dir"))
    assert "local copy of 'helpsteer2' not found" in msg and "validation.jsonl" in msg


def test_unknown_dataset_name_lists_known_names():
    msg = error_of(resolve_dataset, "ultrachat-200k")
    assert "unknown dataset 'ultrachat-200k'" in msg
    for name in ("embedded", "dpo-mix-7k", "helpsteer2", "deita-10k"):
        assert name in msg
    assert "local .jsonl/.json/.parquet file or directory, or a hub id like org/name, also works" in msg


def test_directory_file_role_mismatches(tmp_path):
    write_jsonl(tmp_path / "d1" / "val.jsonl", [{"prompt": "Q", "response": "R"}])
    msg = error_of(resolve_dataset, str(tmp_path / "d1"))
    assert "val.jsonl line 1" in msg and "holds SFT rows, expected preference rows" in msg
    write_jsonl(tmp_path / "d2" / "train.jsonl", [{"prompt": "Q", "response": "R"}])
    write_jsonl(tmp_path / "d2" / "sft.jsonl", [{"prompt": "Q", "response": "R"}])
    assert "put all SFT rows in sft.jsonl" in error_of(resolve_dataset, str(tmp_path / "d2"))


def test_bad_sizes_and_local_path_misuse(tmp_path):
    msg = error_of(resolve_dataset, str(FIX / "local" / "pref_strings.jsonl"), sizes={"train": 3})
    assert "unknown split 'train'" in msg and "pref_train" in msg
    msg = error_of(resolve_dataset, str(FIX / "local" / "pref_strings.jsonl"), sizes={"pref_train": -1})
    assert "non-negative integer" in msg
    msg = error_of(resolve_dataset, str(FIX / "local" / "pref_strings.jsonl"), local_path=str(tmp_path))
    assert "local path was given twice" in msg
    assert "takes no local path" in error_of(resolve_dataset, "embedded", local_path=str(tmp_path))

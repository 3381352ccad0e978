"""Dataset adapters and resolution: hub-schema converters (run offline on local copies), local formats,
splits, caps, hashes, and the one-line BenchError messages for malformed input."""
from __future__ import annotations

import json
import re
from pathlib import Path

import datasets
import pytest

from bench.data.adapters import (
    ADAPTERS,
    convert_deita,
    convert_dpo_mix,
    convert_helpsteer2,
    load_adapter,
    parse_helpsteer2_prompt,
)
from bench.data.bundle import DatasetBundle
from bench.data.resolve import cap_splits, known_datasets, merge_bundles, resolve_dataset
from bench.errors import BenchError

FIX = Path(__file__).parent / "fixtures" / "data"


def U(c):
    return {"role": "user", "content": c}


def A(c):
    return {"role": "assistant", "content": c}


def S(c):
    return {"role": "system", "content": c}


def write_jsonl(path: Path, rows, raw_lines=None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(r) for r in rows] if raw_lines is None else raw_lines
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def error_of(fn, *args, **kwargs) -> str:
    with pytest.raises(BenchError) as info:
        fn(*args, **kwargs)
    msg = str(info.value)
    assert "\n" not in msg, f"error message must be one line: {msg!r}"
    return msg


# ------------------------------------------------------------------------------------------------ registry


def test_known_datasets_lists_embedded_and_adapters():
    names = known_datasets()
    assert names[0] == "embedded"
    assert set(names[1:]) == {"dpo-mix-7k", "helpsteer2", "deita-10k"}
    assert ADAPTERS["dpo-mix-7k"].hf_id == "argilla/dpo-mix-7k"
    assert ADAPTERS["dpo-mix-7k"].splits == {"train": "train", "val": "test"}
    assert ADAPTERS["helpsteer2"].hf_id == "nvidia/HelpSteer2"
    assert ADAPTERS["helpsteer2"].splits == {"train": "train", "val": "validation"}
    assert (ADAPTERS["deita-10k"].hf_id, ADAPTERS["deita-10k"].kind) == ("hkust-nlp/deita-10k-v0", "sft")
    assert {a.kind for a in ADAPTERS.values()} == {"pref", "sft"}


# ------------------------------------------------------------------------------------------------ dpo-mix-7k


def test_dpo_mix_local_copy_converts_rows_exactly():
    b = resolve_dataset("dpo-mix-7k", local_path=str(FIX / "dpo_mix"))
    assert isinstance(b, DatasetBundle)
    assert b.name == "dpo-mix-7k"
    assert b.version == "dpo-mix-7k:argilla/dpo-mix-7k:local-copy"
    assert [len(b.split(s)) for s in ("sft", "pref_train", "pref_val", "test")] == [0, 6, 2, 2]
    assert b.split("pref_train")[2] == {
        "id": "dpo-mix-7k-000002",
        "prompt": [U("Say hi."), A("Hi!"), U("Now say it in French.")],
        "chosen": "Salut !",
        "rejected": "Hola!",
        "meta": {"source": "toy_dialog", "chosen_rating": 5.0, "rejected_rating": 2.0,
                 "chosen_model": "model-a", "rejected_model": "model-b"},
    }
    assert b.split("pref_train")[1]["prompt"] == [S("Answer briefly."), U("What is 2 + 3?")]
    assert [r["id"] for r in b.split("pref_train")] == [f"dpo-mix-7k-{i:06d}" for i in range(6)]
    # the HF test split is both pref_val and the test prompts
    val, test = b.split("pref_val"), b.split("test")
    assert [r["id"] for r in val] == ["dpo-mix-7k-test-000000", "dpo-mix-7k-test-000001"]
    assert [(t["id"], t["prompt"]) for t in test] == [(r["id"], r["prompt"]) for r in val]
    assert test[1]["meta"]["family"] == "dpo-mix-7k"
    assert test[1]["meta"]["reference"] == "Down."
    assert "chosen" not in test[0] and "rejected" not in test[0]


def test_dpo_mix_hf_id_alias_and_revision_in_version(monkeypatch):
    by_name = resolve_dataset("dpo-mix-7k", local_path=str(FIX / "dpo_mix"))
    by_id = resolve_dataset("Argilla/DPO-Mix-7k", local_path=str(FIX / "dpo_mix"))
    assert by_id.hash == by_name.hash
    rows = [json.loads(x) for x in (FIX / "dpo_mix" / "train.jsonl").read_text().splitlines()]
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: datasets.Dataset.from_list(rows))
    b = resolve_dataset("dpo-mix-7k", revision="abc123")
    assert b.version == "dpo-mix-7k:argilla/dpo-mix-7k@abc123"


def test_dpo_mix_single_file_copy_carves_validation_split():
    b = resolve_dataset("dpo-mix-7k", local_path=str(FIX / "dpo_mix" / "train.jsonl"), seed=3)
    train_ids = {r["id"] for r in b.split("pref_train")}
    val_ids = [r["id"] for r in b.split("pref_val")]
    assert len(val_ids) == 1 and len(train_ids) == 5  # 5% of 6 rounds to 0 -> at least 1
    assert not train_ids & set(val_ids)
    assert [t["id"] for t in b.split("test")] == val_ids
    assert b.stats["pref_val"] == {"carved_from_train": 1, "seed": 3}
    # the carve is deterministic and depends on the seed
    again = resolve_dataset("dpo-mix-7k", local_path=str(FIX / "dpo_mix" / "train.jsonl"), seed=3)
    assert [r["id"] for r in again.split("pref_val")] == val_ids
    picks = {resolve_dataset("dpo-mix-7k", local_path=str(FIX / "dpo_mix" / "train.jsonl"),
                             seed=s).split("pref_val")[0]["id"] for s in range(8)}
    assert len(picks) > 1


def test_dpo_mix_converter_rejects_mismatched_prompts():
    row = {"chosen": [U("Q1"), A("good")], "rejected": [U("Q2"), A("bad")]}
    msg = error_of(lambda: _convert_or_bench(convert_dpo_mix, [row]))
    assert "differ between 'chosen' and 'rejected'" in msg
    assert "same prompt turns" in msg


def _convert_or_bench(convert, rows):
    """Run a pure converter the way load_adapter does (strict), reporting like a loader would."""
    from bench.data.adapters import RowError, Source

    try:
        return convert(rows, "x", strict=True)
    except RowError as e:
        raise Source("memory").error(e) from None


# ------------------------------------------------------------------------------------------------ HelpSteer2


def test_helpsteer2_pairs_ties_groups_and_multiturn():
    b = resolve_dataset("helpsteer2", local_path=str(FIX / "helpsteer2"))
    train = b.split("pref_train")
    assert [r["id"] for r in train] == ["helpsteer2-000000", "helpsteer2-000004", "helpsteer2-000007",
                                        "helpsteer2-000010"]
    circle, haiku, fruit, planets = train
    assert circle["chosen"].startswith("A circle is the set") and circle["rejected"] == "It is round."
    # group of three: best (4) vs worst (0)
    assert haiku["chosen"].startswith("Soft rain on the roof") and haiku["rejected"] == "Rain."
    assert haiku["meta"]["group_size"] == 3
    assert (haiku["meta"]["chosen_helpfulness"], haiku["meta"]["rejected_helpfulness"]) == (4, 0)
    assert haiku["meta"]["chosen_scores"] == {"helpfulness": 4, "correctness": 3, "coherence": 4,
                                              "complexity": 1, "verbosity": 2}
    # multi-turn prompt with <extra_id_1> separators -> messages
    assert fruit["prompt"] == [U("Give me a fruit."), A("Apple."), U("Another one, please.")]
    assert (fruit["chosen"], fruit["rejected"]) == ("Banana.", "Apple again.")
    # the tied Mars/Venus pair is dropped; the later, non-consecutive planet rows form their own pair
    assert (planets["chosen"], planets["rejected"]) == ("Jupiter.", "Saturn.")
    assert b.stats["pref_train"] == {"rows": 12, "pairs": 4, "ties_dropped": 1, "singletons_dropped": 1,
                                     "groups_larger_than_2": 1, "skipped_invalid": 0}
    # HF validation split -> pref_val (its tomato pair ties and is dropped) and test prompts
    assert [r["id"] for r in b.split("pref_val")] == ["helpsteer2-validation-000000"]
    assert b.stats["pref_val"]["ties_dropped"] == 1
    assert b.split("test")[0]["meta"]["reference"] == "Hydrogen and oxygen (H2O)."


def test_helpsteer2_converter_ties_in_larger_groups_are_dropped():
    rows = [
        {"prompt": "P", "response": "a", "helpfulness": 2},
        {"prompt": "P", "response": "b", "helpfulness": 2},
        {"prompt": "P", "response": "c", "helpfulness": 2},
        {"prompt": "Q", "response": "x", "helpfulness": 1},
        {"prompt": "Q", "response": "y", "helpfulness": 3},
        {"prompt": "Q", "response": "z", "helpfulness": 3},
    ]
    out = convert_helpsteer2(rows, "hs")
    assert out.stats["ties_dropped"] == 1 and out.stats["groups_larger_than_2"] == 2
    assert [(r["id"], r["chosen"], r["rejected"]) for r in out.rows] == [("hs-000003", "y", "x")]


def test_parse_helpsteer2_prompt_single_turn_is_one_user_message():
    assert parse_helpsteer2_prompt("Just one turn.\nWith two lines.") == [U("Just one turn.\nWith two lines.")]


# ------------------------------------------------------------------------------------------------ deita


def test_deita_sharegpt_to_sft_rows():
    b = resolve_dataset("deita-10k", local_path=str(FIX / "deita"))
    assert [len(b.split(s)) for s in ("sft", "pref_train", "pref_val", "test")] == [3, 0, 0, 0]
    sft = b.split("sft")
    assert sft[0] == {"id": "deita_0", "prompt": [U("What is the capital of France?")], "response": "Paris.",
                      "meta": {"source": "toy_sharegpt"}}
    assert sft[1]["prompt"] == [S("You are concise."), U("Add 2 and 2."), A("4"), U("Now double it.")]
    assert sft[1]["response"] == "8"
    # a trailing human turn after the last gpt turn is not part of the example
    assert (sft[2]["prompt"], sft[2]["response"]) == ([U("Name a colour.")], "Teal.")


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
    suite = pytest.importorskip("bench.suite", reason="bench.suite is being written by another engineer")
    if not hasattr(suite, "build_suite"):
        pytest.skip("bench.suite.build_suite is not written yet")
    b = resolve_dataset("embedded", seed=0)
    assert isinstance(b, DatasetBundle)
    assert b.hash == suite.build_suite(seed=0).hash


# ------------------------------------------------------------------------------------------------ hub path


def test_hub_load_failure_is_one_line_with_local_copy_hint(monkeypatch):
    def boom(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'argilla/dpo-mix-7k' on the Hub\n(LocalEntryNotFoundError)")

    monkeypatch.setattr(datasets, "load_dataset", boom)
    msg = error_of(resolve_dataset, "dpo-mix-7k")
    assert msg.startswith("could not download dataset 'dpo-mix-7k' (argilla/dpo-mix-7k, split 'train')")
    assert "ConnectionError" in msg and "--dataset PATH" in msg


def test_hub_rows_use_the_same_converter_and_skip_bad_rows(monkeypatch):
    good = [json.loads(x) for x in (FIX / "deita" / "train.jsonl").read_text().splitlines()]
    rows = good * 4  # 12 rows, ids repeat -> make them unique
    rows = [{**r, "id": f"d{i}"} for i, r in enumerate(rows)]
    rows[5] = {**rows[5], "conversations": [{"from": "human", "value": "no reply"}]}
    calls = []

    def fake(hf_id, split=None, revision=None, **kwargs):
        calls.append((hf_id, split, revision))
        return datasets.Dataset.from_list(rows)

    monkeypatch.setattr(datasets, "load_dataset", fake)
    b = resolve_dataset("deita-10k")
    assert calls == [("hkust-nlp/deita-10k-v0", "train", None)]
    assert len(b.split("sft")) == 11 and "d5" not in {r["id"] for r in b.split("sft")}
    assert b.stats["sft"] == {"rows": 12, "kept": 11, "skipped_invalid": 1}
    assert b.version == "deita-10k:hkust-nlp/deita-10k-v0"
    # more than 10% malformed: fail with the first problem rather than skipping
    rows[6] = {**rows[6], "conversations": [{"from": "human", "value": "still no reply"}]}
    msg = error_of(resolve_dataset, "deita-10k")
    assert "2 of 12 rows are malformed" in msg and "no gpt turn" in msg and "row 5" in msg
    # strict=True fails on the first bad hub row instead of skipping
    msg = error_of(load_adapter, "deita-10k", strict=True)
    assert "split 'train') row 5 (id 'd5'): 'conversations' has no gpt turn" in msg


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


def test_hub_schema_errors_name_the_file_and_row(tmp_path):
    write_jsonl(tmp_path / "hs" / "train.jsonl", [
        {"prompt": "P", "response": "a", "helpfulness": 3},
        {"prompt": "P", "response": "b", "helpfulness": "high"},
    ])
    msg = error_of(resolve_dataset, "helpsteer2", local_path=str(tmp_path / "hs"))
    assert "train.jsonl line 2" in msg and "field 'helpfulness' must be a number, got 'high'" in msg
    write_jsonl(tmp_path / "dm.jsonl", [{"chosen": [U("Q"), A("a")], "rejected": [U("Q"), U("b")]}])
    msg = error_of(resolve_dataset, "dpo-mix-7k", local_path=str(tmp_path / "dm.jsonl"))
    assert "dm.jsonl line 1" in msg and "'rejected' ends with a user turn, not an assistant turn" in msg
    write_jsonl(tmp_path / "dt.jsonl", [{"id": "c9", "conversations": [{"from": "gpt", "value": "hi"}]}])
    msg = error_of(resolve_dataset, "deita-10k", local_path=str(tmp_path / "dt.jsonl"))
    assert "(id 'c9')" in msg and "has no messages" in msg
    write_jsonl(tmp_path / "dt2.jsonl", [{"conversations": [{"from": "bot", "value": "hi"}]}])
    msg = error_of(resolve_dataset, "deita-10k", local_path=str(tmp_path / "dt2.jsonl"))
    assert "unknown from 'bot'" in msg and "human, user, gpt" in msg


def test_bad_sizes_and_local_path_misuse(tmp_path):
    msg = error_of(resolve_dataset, str(FIX / "local" / "pref_strings.jsonl"), sizes={"train": 3})
    assert "unknown split 'train'" in msg and "pref_train" in msg
    msg = error_of(resolve_dataset, str(FIX / "local" / "pref_strings.jsonl"), sizes={"pref_train": -1})
    assert "non-negative integer" in msg
    msg = error_of(resolve_dataset, str(FIX / "local" / "pref_strings.jsonl"), local_path=str(tmp_path))
    assert "local path was given twice" in msg
    assert "takes no local path" in error_of(resolve_dataset, "embedded", local_path=str(tmp_path))


def test_pure_converters_do_no_io_and_are_repeatable():
    rows = [{"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]}]
    assert convert_deita(rows, "p").rows == convert_deita(rows, "p").rows == [
        {"id": "p-000000", "prompt": [U("Hi")], "response": "Hello", "meta": {}}]
    assert rows == [{"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]}]

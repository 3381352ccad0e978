"""Dataset adapters: hub-schema converters (run offline on local copies), the hub path, and the one-line BenchError
messages for malformed hub-schema input. Local formats, ids, caps and local-input errors: tests/data/test_local.py."""
from __future__ import annotations

import json

import datasets

from bench.data.adapters import (
    ADAPTERS,
    convert_deita,
    convert_dpo_mix,
    convert_helpsteer2,
    load_adapter,
    parse_helpsteer2_prompt,
)
from bench.data.bundle import DatasetBundle
from bench.data.resolve import known_datasets, resolve_dataset
from data_kit import FIX, A, S, U, error_of, write_jsonl


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


def test_pure_converters_do_no_io_and_are_repeatable():
    rows = [{"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]}]
    assert convert_deita(rows, "p").rows == convert_deita(rows, "p").rows == [
        {"id": "p-000000", "prompt": [U("Hi")], "response": "Hello", "meta": {}}]
    assert rows == [{"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]}]

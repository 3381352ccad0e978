"""Bring your own data: TRL's preference formats in JSONL/JSON/Parquet files and hub ids, content-derived row ids,
SFT rows from the chosen responses, the select_by default, and failures that happen before any work."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import datasets
import pytest

from bench.config import RunConfig
from bench.data.resolve import resolve_dataset
from bench.errors import BenchError

U = lambda text: {"role": "user", "content": text}  # noqa: E731
A = lambda text: {"role": "assistant", "content": text}  # noqa: E731

# the same three pairs in each of TRL's four preference formats
PAIRS = [("What is 2+2?", "4", "5"), ("Name a colour.", "Blue.", "Seven."), ("Say hi.", "Hi!", "No.")]
FORMATS = {
    "standard-explicit": [{"prompt": p, "chosen": c, "rejected": r} for p, c, r in PAIRS],
    "conversational-explicit": [{"prompt": [U(p)], "chosen": [A(c)], "rejected": [A(r)]} for p, c, r in PAIRS],
    "conversational-implicit": [{"chosen": [U(p), A(c)], "rejected": [U(p), A(r)]} for p, c, r in PAIRS],
}


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def pairs_of(bundle) -> set[tuple]:
    rows = bundle.split("pref_train") + bundle.split("pref_val")
    return {(json.dumps(r["prompt"]), r["chosen"], r["rejected"]) for r in rows}


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_trl_formats_give_the_same_rows_and_ids(tmp_path, fmt):
    base = resolve_dataset(str(write_jsonl(tmp_path / "base.jsonl", FORMATS["standard-explicit"])))
    b = resolve_dataset(str(write_jsonl(tmp_path / f"{fmt}.jsonl", FORMATS[fmt])))
    assert pairs_of(b) == pairs_of(base) == {(json.dumps([U(p)]), c, r) for p, c, r in PAIRS}
    # ids come from content: the same pairs in another format (and another file name) get the same ids and hashes
    assert b.hashes() == base.hashes()


def test_standard_implicit_prompt_is_the_shared_prefix(tmp_path):
    rows = [{"chosen": "The sky is blue.", "rejected": "The sky is green."},
            {"chosen": "Two plus two is 4", "rejected": "Two plus two is 5"}]
    b = resolve_dataset(str(write_jsonl(tmp_path / "implicit.jsonl", rows)))
    got = {r["prompt"][0]["content"]: (r["chosen"], r["rejected"]) for r in b.split("pref_train") + b.split("pref_val")}
    assert got == {"The sky is": (" blue.", " green."), "Two plus two is": (" 4", " 5")}
    bad = write_jsonl(tmp_path / "noprefix.jsonl", [{"chosen": "Yes.", "rejected": "No."}])
    with pytest.raises(BenchError, match="share no leading prompt text"):
        resolve_dataset(str(bad))


def test_json_array_and_parquet_files_read_like_jsonl(tmp_path):
    rows = FORMATS["conversational-explicit"]
    jsonl = resolve_dataset(str(write_jsonl(tmp_path / "a.jsonl", rows)))
    (tmp_path / "b.json").write_text(json.dumps(rows))
    datasets.Dataset.from_list(rows).to_parquet(str(tmp_path / "c.parquet"))
    assert resolve_dataset(str(tmp_path / "b.json")).hashes() == jsonl.hashes()
    assert resolve_dataset(str(tmp_path / "c.parquet")).hashes() == jsonl.hashes()
    # a folder of parquet files: train + val
    d = tmp_path / "folder"
    d.mkdir()
    datasets.Dataset.from_list(FORMATS["standard-explicit"][:2]).to_parquet(str(d / "train.parquet"))
    datasets.Dataset.from_list(FORMATS["standard-explicit"][2:]).to_parquet(str(d / "val.parquet"))
    b = resolve_dataset(str(d))
    assert [r["chosen"] for r in b.split("pref_val")] == ["Hi!"] and len(b.split("pref_train")) == 2
    (tmp_path / "broken.parquet").write_text("not parquet")
    with pytest.raises(BenchError, match="cannot be read as Parquet"):
        resolve_dataset(str(tmp_path / "broken.parquet"))


def test_renaming_or_moving_a_file_keeps_ids_splits_and_hashes(tmp_path):
    rows = [{"prompt": f"Question {i}?", "chosen": f"Answer {i}.", "rejected": f"Wrong {i}."} for i in range(40)]
    a = write_jsonl(tmp_path / "prefs.jsonl", rows)
    b = tmp_path / "elsewhere" / "renamed-data.jsonl"
    b.parent.mkdir()
    shutil.copy(a, b)
    ba, bb = resolve_dataset(str(a), sizes={"pref_train": 10}), resolve_dataset(str(b), sizes={"pref_train": 10})
    assert ba.hashes() == bb.hashes() and ba.hash == bb.hash
    assert [r["id"] for r in ba.split("pref_val")] == [r["id"] for r in bb.split("pref_val")]
    assert ba.split("test") == bb.split("test")  # test prompts carry no file name either
    # a row's id is its content: reordering the file moves no row between splits
    shutil.copy(a, tmp_path / "x.jsonl")
    reordered = resolve_dataset(str(write_jsonl(tmp_path / "reordered.jsonl", rows[::-1])))
    assert {r["id"] for r in reordered.split("pref_val")} == {r["id"] for r in ba.split("pref_val")}


def test_identical_rows_get_distinct_content_ids_and_explicit_ids_are_kept(tmp_path):
    rows = [{"prompt": "Q?", "chosen": "a", "rejected": "b"}] * 2 + [{"id": "mine", "prompt": "R?", "chosen": "c",
                                                                      "rejected": "d"}]
    b = resolve_dataset(str(write_jsonl(tmp_path / "dups.jsonl", rows)))
    ids = sorted(r["id"] for r in b.split("pref_train") + b.split("pref_val"))
    assert len(set(ids)) == 3 and "mine" in ids
    generated = [i for i in ids if i != "mine"]
    assert generated[1] == generated[0] + "-2"


def test_hub_id_in_trl_format_maps_train_and_test_splits(monkeypatch):
    """A hub id that is not one of the named adapters loads every split with datasets.load_dataset (served here
    from memory: no network) and reads the rows like a local file."""
    calls = []
    conv = FORMATS["conversational-implicit"]

    def fake_load(hf_id, revision=None, **kwargs):
        calls.append((hf_id, revision, kwargs))
        return datasets.DatasetDict({"train_prefs": datasets.Dataset.from_list(conv[:2]),
                                     "test_prefs": datasets.Dataset.from_list(conv[2:])})

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    b = resolve_dataset("someone/my-prefs")
    assert calls == [("someone/my-prefs", None, {})]
    assert [r["chosen"] for r in b.split("pref_train")] == ["4", "Blue."]
    assert [r["chosen"] for r in b.split("pref_val")] == ["Hi!"] and len(b.split("test")) == 1
    assert b.version == "hub:someone/my-prefs"

    def offline(*args, **kwargs):
        raise ConnectionError("offline")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(BenchError, match="could not load dataset 'someone/my-prefs'"):
        resolve_dataset("someone/my-prefs")


def test_no_sft_split_uses_chosen_responses_with_one_notice(tiny_dirs, tmp_path):
    from bench.pipeline.graph import Pipeline

    path = write_jsonl(tmp_path / "p.jsonl", [{"prompt": f"Q{i}?", "chosen": f"A{i}.", "rejected": f"B{i}."}
                                              for i in range(20)])
    pipe = Pipeline(RunConfig(method="dpo", preset="tiny", dataset=str(path)))
    sft, train = pipe.bundle.split("sft"), pipe.bundle.split("pref_train")
    assert [(r["id"], r["prompt"], r["response"]) for r in sft] == [(r["id"], r["prompt"], r["chosen"]) for r in train]
    # one notice each for the two defaults this data gets (`bench run` and `--dry-run` print them)
    assert len(pipe.notices) == 2
    assert "has no SFT split: the SFT stages train on the chosen responses" in pipe.notices[0]
    assert "sft_dataset=FILE" in pipe.notices[0]
    # select_by: the preset's "verified" means the verified score where there are checkers, reward accuracy here
    assert pipe.preset["select_by"] == "reward_accuracy"
    assert pipe.notices[1].startswith("checkpoint selection: reward accuracy on 1 validation pairs")
    # an sft_dataset given explicitly wins over the chosen responses
    sft_file = write_jsonl(tmp_path / "sft.jsonl", [{"prompt": "Hello?", "response": "Hello."}])
    pipe2 = Pipeline(RunConfig(method="dpo", preset="tiny", dataset=str(path),
                               stage_overrides={"sft_dataset": str(sft_file)}))
    assert [r["response"] for r in pipe2.bundle.split("sft")] == ["Hello."]
    assert not any("no SFT split" in n for n in pipe2.notices)


def test_run_prints_each_notice_once(tiny_dirs, tmp_path):
    import os
    import subprocess
    import sys

    path = write_jsonl(tmp_path / "p.jsonl", [{"prompt": f"Q{i}?", "chosen": f"A{i}.", "rejected": f"B{i}."}
                                              for i in range(20)])
    proc = subprocess.run([str(Path(sys.executable).parent / "bench"), "run", "--method", "dpo", "--preset", "tiny",
                           "--dataset", str(path), "--runs", str(tmp_path / "runs")], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr
    notices = [line for line in proc.stderr.splitlines() if line.startswith("notice: ")]
    assert len(notices) == 2 and "no SFT split" in notices[0] and "checkpoint selection" in notices[1]
    assert "verified skipped" not in proc.stderr  # no checkers in this data: the verified score is not attempted


def test_embedded_data_keeps_verified_selection(tiny_dirs):
    from bench.pipeline.graph import Pipeline

    pipe = Pipeline(RunConfig(method="dpo", preset="tiny"))
    assert pipe.preset["select_by"] == "verified"


@pytest.mark.parametrize("rows, overrides, needle", [
    ([{"prompt": "Q?", "response": "R."}] * 3, {}, "has no preference pairs"),
    ([{"prompt": f"Q{i}?", "chosen": "a", "rejected": "b"} for i in range(8)], {"select_by": "verified"},
     "select_by=verified needs embedded-suite prompts"),
    ([{"prompt": "Q?", "chosen": "a", "rejected": "b"}], {}, "has no pref_val rows"),
])
def test_data_that_cannot_run_fails_before_any_work_and_leaves_nothing(tiny_dirs, tmp_path, rows, overrides, needle):
    from bench.runs.run import run_pipeline

    path = write_jsonl(tmp_path / "data.jsonl", rows)
    runs = tmp_path / "runs"
    with pytest.raises(BenchError, match=needle):
        run_pipeline(RunConfig(method="dpo", preset="tiny", dataset=str(path), runs_dir=str(runs),
                               stage_overrides=overrides))
    assert not runs.exists()  # no runs folder, let alone an empty run directory

"""The student's own pairs (bench/pipeline/student_data.py, preset key `student_pairs`): the teachers train on the
dataset's pairs, the student on on-policy pairs sampled from a pipeline stage and judged; the recipe keys the run
without building anything; bad settings stop before any work with one error line."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from bench.config import RunConfig
from bench.errors import BenchError
from bench.pipeline.graph import Pipeline
from bench.store.files import read_jsonl

sys.path.insert(0, str(Path(__file__).parents[1] / "fixtures" / "eval"))
from evalkit import tiny_rm_dir  # noqa: E402

pytestmark = pytest.mark.usefixtures("single_thread_module")


def pairs_section(**kw) -> dict:
    return {"policy": "ref_teacher", "samples": 3, "temperature": 1.0, "judge": "rm", "rm_model": str(tiny_rm_dir()),
            "max_new_tokens": 6, **kw}


def tiny_cfg(tmp_path, method="dpo", **overrides) -> RunConfig:
    return RunConfig(method=method, preset="tiny", runs_dir=str(tmp_path / "runs"), stage_overrides=overrides)


def test_the_teachers_keep_the_dataset_pairs_and_the_student_gets_judged_samples(tiny_dirs, tmp_path):
    gold = Pipeline(tiny_cfg(tmp_path))
    pipe = Pipeline(tiny_cfg(tmp_path, student_pairs=pairs_section()))
    # the teacher stages are the same stages in both regimes (keyed by the same gold pairs)
    assert pipe.model_key("dpo_teacher") == gold.model_key("dpo_teacher")
    assert pipe.bundle.split("teacher_pref") == gold.bundle.split("pref_train")
    # the student's data is keyed by the pairs' recipe, so its identity differs, before anything is built
    assert pipe.student_key_for("dpo", {}) != gold.student_key_for("dpo", {})
    assert not pipe.student_pairs.is_built()
    rows = pipe.split_rows("pref_train")
    assert pipe.student_pairs.is_built()
    made = read_jsonl(pipe.student_pairs.path() / "pairs.jsonl")
    assert rows == made and rows, "the student trains on the pairs stage's rows"
    gold_rows = {r["id"]: r for r in gold.bundle.split("pref_train")}
    for r in rows:
        assert r["id"] in gold_rows and r["prompt"] == gold_rows[r["id"]]["prompt"]
        assert r["meta"]["judge"] == "rm" and r["meta"]["chosen_score"] > r["meta"]["rejected_score"]
        assert {"chosen_verified", "rejected_verified", "family"} <= set(r["meta"])
    # `prompts: N` samples on the first N prompts of the teachers' pairs only
    capped = Pipeline(tiny_cfg(tmp_path, student_pairs=pairs_section(prompts=5)))
    assert [r["id"] for r in capped.student_pairs.prompt_rows] == [r["id"] for r in gold.bundle.split("pref_train")[:5]]
    assert capped.student_key_for("dpo", {}) != pipe.student_key_for("dpo", {})
    # another sampling seed is another recipe: another student identity, same teachers
    other = Pipeline(tiny_cfg(tmp_path, student_pairs=pairs_section(seed=1)))
    assert other.student_key_for("dpo", {}) != pipe.student_key_for("dpo", {})
    assert other.model_key("dpo_teacher") == gold.model_key("dpo_teacher")


def test_a_run_on_student_pairs_records_them_and_dry_run_lists_the_stage(tiny_dirs, tmp_path):
    from bench.runs.plan import dry_run
    from bench.runs.run import run_pipeline

    cfg = tiny_cfg(tmp_path, "sft", student_pairs=pairs_section(seed=3))
    before = "\n".join(dry_run(cfg))
    assert "pairs      the student's pref_train: 3 samples per prompt from ref_teacher" in before
    assert "build   pairs of ref_teacher for the student" in before
    assert "keyed by the pairs or generations above" not in before  # sft reads no signals
    run = run_pipeline(cfg)
    m = run.manifest
    assert m["student_pairs"]["policy"] == "ref_teacher" and m["student_pairs"]["spec"]["seed"] == 3
    assert m["student_pairs"]["counts"]["pairs"] == len(Pipeline(cfg).split_rows("pref_train"))
    assert 0.0 <= m["student_pairs"]["chosen_verified"] <= 1.0
    assert "teacher_pref" in m["data_hashes"]
    # the reference levels the leaderboard draws: the chosen side is the pairs' true quality, the SFT student is
    # scored on the run's own test prompts (the DPO teacher only if some run built it: sft never trains it)
    refs = m["references"]
    made = Pipeline(cfg).split_rows("pref_train")
    assert m["student_pairs"]["chosen_verified"] == pytest.approx(
        sum(r["meta"]["chosen_verified"] for r in made) / len(made))  # each pair's own record of its quality
    assert refs["chosen"] == pytest.approx(m["student_pairs"]["chosen_verified"])
    assert refs["rejected"] == pytest.approx(m["student_pairs"]["rejected_verified"])
    assert 0.0 <= refs["sft_student"] <= 1.0
    assert "cached  pairs of ref_teacher for the student" in "\n".join(dry_run(cfg))


@pytest.mark.parametrize("section, needles", [
    ({"samples": 1}, ["samples=1", "at least 2"]),
    ({"temperature": 0}, ["temperature=0", "> 0"]),
    ({"judge": None}, ["student_pairs.judge is missing", "verified", "rm"]),
    ({"judge": "oracle"}, ["unknown judge 'oracle'"]),
    ({"judge": "rm", "rm_model": "no-such-rm"}, ["unknown RM preset 'no-such-rm'"]),
    ({"policy": "dpo_student"}, ["student_pairs.policy='dpo_student'", "ref_teacher"]),
    ({"samlpes": 4}, ["unknown setting(s) samlpes"]),
    ({"prompts": 0}, ["student_pairs.prompts=0", "positive integer"]),
])
def test_bad_student_pairs_fail_when_the_pipeline_is_made(tiny_dirs, tmp_path, monkeypatch, section, needles):
    import bench.pipeline.student_data as sd

    monkeypatch.setattr(sd, "sample_responses", lambda *a, **k: pytest.fail("worked before failing"))
    base = {"policy": "ref_teacher", "samples": 4, "temperature": 1.0, "judge": "verified"}
    with pytest.raises(BenchError) as e:
        Pipeline(tiny_cfg(tmp_path, student_pairs={**base, **section}))
    msg = str(e.value)
    assert "\n" not in msg and all(n in msg for n in needles), msg


def test_student_pairs_must_be_a_mapping_and_null_turns_them_off(tiny_dirs, tmp_path):
    with pytest.raises(BenchError, match="student_pairs must be a mapping"):
        Pipeline(tiny_cfg(tmp_path, student_pairs=4))
    off = Pipeline(tiny_cfg(tmp_path, student_pairs=None))
    assert off.student_pairs is None and off.teacher_pref == "pref_train" and off.bundle.split("pref_train")


def test_the_cli_takes_student_pairs_as_a_preset_key(tiny_dirs, tmp_path, monkeypatch, capsys):
    from cli_kit import assert_one_line_error, bench_main

    code, _, err = bench_main(monkeypatch, capsys, "run", "--method", "sft", "--preset", "tiny", "--runs",
                              str(tmp_path / "runs"), "--set", "student_pairs.samples=1",
                              "--set", "student_pairs.judge=verified", "--dry-run")
    assert_one_line_error(code, err, "samples=1")
    assert not (tmp_path / "runs").exists()


def test_a_presets_checker_judged_pairs_give_way_to_your_own_pairs_with_a_notice(tiny_dirs, tmp_path):
    """`bench run --dataset mine.jsonl` under a preset with checker-judged student pairs (the embedded default):
    your data has no checkers, so the student trains on your pairs, and a notice says so; asking for them on the
    command line is an error naming the fix."""
    import yaml

    from bench.paths import CONFIG_DIR

    preset = yaml.safe_load((CONFIG_DIR / "runs" / "tiny.yaml").read_text())
    preset["student_pairs"] = {"samples": 4, "judge": "verified", "noise": 0.25}
    path = tmp_path / "tiny-pairs.yaml"
    path.write_text(yaml.safe_dump(preset))
    data = str(Path(__file__).resolve().parents[2] / "examples" / "prefs.jsonl")
    cfg = RunConfig(method="dpo", preset=str(path), dataset=data, runs_dir=str(tmp_path / "runs"))
    pipe = Pipeline(cfg)
    assert pipe.student_pairs is None and pipe.teacher_pref == "pref_train" and pipe.bundle.split("pref_train")
    assert any("has no checkers: the student trains on its own pairs" in n for n in pipe.notices)
    with pytest.raises(BenchError, match="judge 'verified' needs prompts with the embedded suite's checkers"):
        Pipeline(RunConfig(method="dpo", preset=str(path), dataset=data, runs_dir=str(tmp_path / "runs"),
                           stage_overrides={"student_pairs.noise": 0.2}))
    # on the embedded suite the same preset makes them
    assert Pipeline(RunConfig(method="dpo", preset=str(path), runs_dir=str(tmp_path / "runs"))).student_pairs

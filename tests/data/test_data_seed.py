"""The run seed seeds the student only; the data comes from the preset's fixed `data_seed`, so the seeds of one table
share the dataset, the test prompts, every teacher stage, the SFT student and the cached signals."""
from __future__ import annotations

import pytest

import bench.pipeline.signal_stages as signal_stages
from bench.config import RunConfig
from bench.errors import BenchError
from bench.pipeline.graph import Pipeline
from bench.runs.run import run_pipeline

pytestmark = pytest.mark.usefixtures("single_thread_module")


def with_(cfg: RunConfig, **kw) -> RunConfig:
    return RunConfig(**{**cfg.to_dict(), **kw})


def test_seeds_share_data_and_teacher_side_keys(tiny_dirs, tiny_run_config, tmp_path):
    p0 = Pipeline(tiny_run_config(tmp_path, seed=0))
    p1 = Pipeline(tiny_run_config(tmp_path, seed=1))
    assert p0.bundle.hash == p1.bundle.hash
    assert [r["id"] for r in p0.split_rows("test")] == [r["id"] for r in p1.split_rows("test")]
    for role in ("ref_teacher", "dpo_teacher", "chosen_teacher", "sft_student"):
        assert p0.model_key(role) == p1.model_key(role), role
    k0, k1 = p0.student_key_for("dpo", {}), p1.student_key_for("dpo", {})
    assert k0["seed"] == 0 and k1["seed"] == 1 and k0 != k1
    assert {k: v for k, v in k0.items() if k != "seed"} == {k: v for k, v in k1.items() if k != "seed"}


def test_data_seed_changes_the_data(tiny_dirs, tiny_run_config, tmp_path):
    base = Pipeline(tiny_run_config(tmp_path))
    other = Pipeline(tiny_run_config(tmp_path, stage_overrides={"data_seed": 1}))
    assert base.data_seed == 0 and other.data_seed == 1
    assert base.bundle.hash != other.bundle.hash
    assert base.model_key("ref_teacher") != other.model_key("ref_teacher")
    with pytest.raises(BenchError, match="data_seed"):
        Pipeline(tiny_run_config(tmp_path, stage_overrides={"data_seed": "x"}))


def test_second_seed_reuses_every_teacher_stage_and_signal(tiny_dpo_run, tmp_path, monkeypatch):
    """After the seed-0 DPO run, a seed-1 DPO run trains only its student: no stage, no signal pass."""
    _, cfg = tiny_dpo_run
    redone = []

    def no_stage(self, role, out):
        redone.append(role)
        raise AssertionError(f"stage {role} retrained for another seed")

    def no_signals(*a, **kw):
        redone.append(kw.get("desc"))
        raise AssertionError("signals recomputed for another seed")

    monkeypatch.setattr(Pipeline, "_train_stage", no_stage)
    monkeypatch.setattr(signal_stages, "sharded_signals", no_signals)
    run = run_pipeline(with_(cfg, seed=1, runs_dir=str(tmp_path)))
    assert redone == []
    assert run.manifest["seed"] == 1 and "-s1-" in run.path.name
    assert run.manifest["data_hashes"] == tiny_dpo_run[0].manifest["data_hashes"]
    assert run.manifest["model_identities"] == tiny_dpo_run[0].manifest["model_identities"]


def test_families_keep_only_those_task_families(tiny_dirs, tiny_run_config, tmp_path):
    base = Pipeline(tiny_run_config(tmp_path))
    sub = Pipeline(tiny_run_config(tmp_path, stage_overrides={"families": ["max", "last"]}))
    for split in ("sft", "pref_train", "pref_val", "test"):
        rows = sub.split_rows(split)
        fams = [r["id"].split("-")[0] for r in rows]
        assert set(fams) == {"last", "max"} and len(rows) == len(base.split_rows(split)), split
        assert abs(fams.count("last") - fams.count("max")) <= 1  # shared out evenly, registry order first
    assert sub.bundle.hash != base.bundle.hash and sub.model_key("ref_teacher") != base.model_key("ref_teacher")
    # naming every family is the default suite: the same data and keys
    from bench.data.suite import FAMILIES
    full = Pipeline(tiny_run_config(tmp_path, stage_overrides={"families": list(FAMILIES)}))
    assert full.bundle.hash == base.bundle.hash


@pytest.mark.parametrize("value,needle", [(["max", "nope"], "unknown nope"), ("max", "non-empty list"),
                                          ([], "non-empty list")])
def test_bad_families_fail_with_one_line(tiny_dirs, tiny_run_config, tmp_path, value, needle):
    with pytest.raises(BenchError, match=needle) as e:
        Pipeline(tiny_run_config(tmp_path, stage_overrides={"families": value}))
    assert "\n" not in str(e.value)


def test_families_apply_to_the_embedded_suite_only():
    from bench.data.resolve import resolve_dataset

    with pytest.raises(BenchError, match="embedded suite only"):
        resolve_dataset("dpo-mix-7k", families=["max"])

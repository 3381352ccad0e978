"""Every registered method runs end to end (`bench run`) on tiny random models, and the pipeline shares work:
teacher passes are computed once per (model, data), and ADPA+ builds its DCKD student once and reuses it."""
from __future__ import annotations

import json
import math

import pytest
from typer.testing import CliRunner

from bench.registry import method_names
from bench.runs.run import run_pipeline
from bench.signals.compute import FORWARD_PASSES
from bench.store.stages import content_key

ALL = [m for m in method_names() if m in {
    "sft", "dpo", "dckd", "adpa", "adpa_plus", "tvkd", "simpo", "wpo", "tdpo", "vanilla_kd", "seq_kd", "atkd",
    "plad", "ddpo", "dpkd", "gkd", "distillm2", "rpo", "uld", "gold", "pad", "aligndistil"}]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return tmp_path_factory.mktemp("e2e-tiny")


def test_all_twenty_two_methods_are_registered():
    assert len(ALL) == 22


@pytest.mark.parametrize("method", ALL)
def test_method_runs_end_to_end(method, runs, tiny_dirs):
    from cli import app

    result = CliRunner().invoke(app, ["run", "--method", method, "--student", "tiny-random-student", "--preset",
                                      "tiny", "--runs", str(runs)])
    assert result.exit_code == 0, result.output
    run_dir = next(p for p in runs.iterdir() if p.name.startswith(f"{method}-tiny-random-student"))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["method"] == method and manifest["teacher"] == "tiny-random"
    assert metrics["train"]["steps"] == 3
    assert math.isfinite(metrics["train"]["final_loss"])
    assert 0.0 <= metrics["verified"]["score"] <= 1.0
    assert 0.0 <= metrics["reward_accuracy"]["score"] <= 1.0
    assert (run_dir / "checkpoint" / "config.json").exists()


@pytest.fixture
def fresh_stages(tmp_path, bench_cache, tiny_dirs, monkeypatch):
    """An empty stage cache (the converted models are shared), so the pass counts below start from zero."""
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "models").symlink_to(bench_cache / "models", target_is_directory=True)
    monkeypatch.setenv("BENCH_CACHE", str(cache))
    return cache


def _teacher_passes(pipe) -> int:
    return FORWARD_PASSES[content_key(pipe.model_key("dpo_teacher"))]


def test_second_method_recomputes_no_teacher_pass(tmp_path, fresh_stages, tiny_run_config):
    from bench.pipeline.graph import Pipeline

    run_pipeline(tiny_run_config(tmp_path, method="dckd", seed=7))
    pipe = Pipeline(tiny_run_config(tmp_path, method="tvkd", seed=7))
    before_teacher, before = _teacher_passes(pipe), dict(FORWARD_PASSES)
    assert before_teacher > 0  # DCKD ran the DPO teacher over chosen and rejected
    run_pipeline(tiny_run_config(tmp_path, method="tvkd", seed=7))  # needs the same teacher pass (values)
    assert _teacher_passes(pipe) == before_teacher
    grown = {k for k, v in FORWARD_PASSES.items() if v > before.get(k, 0)}
    assert grown == {content_key(pipe.model_key("sft_student"))}  # only the new reference log-probs pass
    after_tvkd = sum(FORWARD_PASSES.values())
    run_pipeline(tiny_run_config(tmp_path, method="vanilla_kd", seed=7))  # teacher top-k on chosen: cached
    run_pipeline(tiny_run_config(tmp_path, method="dpo", seed=7))  # reference log-probs: cached by TVKD
    assert sum(FORWARD_PASSES.values()) == after_tvkd


def test_adpa_plus_builds_the_dckd_student_once(tmp_path, fresh_stages, tiny_run_config, monkeypatch):
    import bench.pipeline.graph as pipeline_mod

    trained = []
    original = pipeline_mod.Pipeline._train_dependency_run

    def spy(self, method_name, out):
        trained.append(method_name)
        return original(self, method_name, out)

    monkeypatch.setattr(pipeline_mod.Pipeline, "_train_dependency_run", spy)
    run_pipeline(tiny_run_config(tmp_path, method="adpa_plus", seed=11))
    assert trained == ["dckd"]  # built first because it was missing
    pipe = pipeline_mod.Pipeline(tiny_run_config(tmp_path, method="adpa_plus", seed=11))
    stage = pipe.built_path("run:dckd")
    assert stage is not None and json.loads((pipe.model_dir("run:dckd") / "stage.json").read_text())["method"] == "dckd"
    # another ADPA+ run (other gamma) on the same pair, data and seed reuses the cached DCKD student
    run_pipeline(tiny_run_config(tmp_path, method="adpa_plus", seed=11, method_settings={"gamma": 2.0}))
    assert trained == ["dckd"]


def test_a_dckd_run_serves_as_adpa_plus_init(tmp_path, fresh_stages, tiny_run_config, monkeypatch):
    import bench.pipeline.graph as pipeline_mod

    run_pipeline(tiny_run_config(tmp_path, method="dckd", seed=12))
    calls = []
    monkeypatch.setattr(pipeline_mod.Pipeline, "_train_dependency_run", lambda *a: calls.append(a) or {})
    run_pipeline(tiny_run_config(tmp_path, method="adpa_plus", seed=12))
    assert calls == []  # the DCKD run directory's checkpoint was registered as `run:dckd`


def test_aligndistil_trains_the_reverse_dpo_teacher_on_swapped_pairs(tmp_path, fresh_stages, tiny_run_config):
    from bench.pipeline.graph import Pipeline
    from bench.registry import get_method

    pipe = Pipeline(tiny_run_config(tmp_path, method="aligndistil"))
    dpo = get_method("dpo")
    data = pipe.train_data(dpo, dpo.make_config(), pipe.teacher_pref, {"reference": "ref_teacher"}, swap=True)
    assert data.sides["chosen"] == pipe.side_pairs(pipe.teacher_pref, "rejected", {})
    assert data.sides["rejected"] == pipe.side_pairs(pipe.teacher_pref, "chosen", {})
    assert pipe.model_key("rdpo_teacher") != pipe.model_key("dpo_teacher")
    assert pipe.stage_cfg("rdpo_teacher") == pipe.stage_cfg("dpo_teacher")  # the same recipe by default


def test_a_missing_reverse_teacher_is_one_error_line_before_any_work(tmp_path, tiny_dirs, monkeypatch, capsys):
    from cli_kit import assert_one_line_error, bench_main

    code, _, err = bench_main(monkeypatch, capsys, "run", "--method", "aligndistil", "--preset", "tiny",
                              "--set", f"rdpo_teacher.path={tmp_path / 'nope'}", "--runs", str(tmp_path / "runs"))
    assert_one_line_error(code, err, "rdpo_teacher.path=", "is not a model directory")
    assert not (tmp_path / "runs").exists()

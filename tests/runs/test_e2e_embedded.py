"""End-to-end smoke tests on the real embedded model (SmolLM2-135M-Instruct teacher, 12-layer student), with the
`smoke` run preset: every stage runs for real with tiny sizes. They share one cache, so the teachers, the SFT
student and the teacher signals are built once."""
from __future__ import annotations

import json

import pytest
import torch

from bench.config import RunConfig
from bench.pipeline.graph import Pipeline
from bench.runs.run import run_pipeline
from bench.signals.cache import bytes_per_token
from bench.signals.compute import FORWARD_PASSES

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("e2e-runs")


def test_dpo_teacher_signals_student_dpo(runs_dir):
    cfg = RunConfig(method="dpo", preset="smoke", runs_dir=str(runs_dir))
    pipe = Pipeline(cfg)
    # DPO teacher (from the SFT'd reference teacher), then its signals over chosen
    teacher_dir = pipe.model_dir("dpo_teacher")
    assert (teacher_dir / "config.json").exists()
    entry = pipe.signal_entry("dpo_teacher", "chosen", "pref_train", {})
    sizes = bytes_per_token(entry)
    assert sizes["topk"] + sizes["logps"] <= 310
    first = entry.example("topk", 0)
    n_tokens = len(pipe.side_pairs("pref_train", "chosen", {})[0][1])
    assert first["topk_ids"].shape == (n_tokens, 50)
    assert torch.all(first["tail"] >= 0) and torch.all(first["tail"] < 1)

    run = run_pipeline(cfg)
    manifest, metrics = run.manifest, run.metrics
    assert manifest["method"] == "dpo" and manifest["student"] == "smollm2-135m-l12"
    assert manifest["teacher"] == "smollm2-135m" and manifest["suite_version"]
    assert set(manifest["data_hashes"]) >= {"sft", "pref_train", "pref_val", "test"}
    assert 0.0 <= metrics["verified"]["score"] <= 1.0
    assert 0.0 <= metrics["reward_accuracy"]["score"] <= 1.0
    gens = [json.loads(line) for line in run.generations_path.read_text().splitlines()]
    assert len(gens) == 4 and all(isinstance(g["response"], str) for g in gens)

    # the same pair and data again: teacher stages and signals are reused, no forward pass
    before = sum(FORWARD_PASSES.values())
    Pipeline(cfg).signal_entry("dpo_teacher", "chosen", "pref_train", {})
    assert sum(FORWARD_PASSES.values()) == before


# Every method runs end to end on the tiny models (tests/runs/test_e2e_methods_tiny.py); here, on the real model,
# the seed method that reads the most the DPO run above does not: TVKD's values and top-k from the DPO teacher
# (the DPO test builds and checks the same top-k entry DCKD reads).
@pytest.mark.parametrize("method", ["tvkd"])
def test_seed_methods_run_on_embedded(runs_dir, method):
    run = run_pipeline(RunConfig(method=method, preset="smoke", runs_dir=str(runs_dir)))
    metrics = run.metrics
    assert run.manifest["method"] == method
    assert 0.0 <= metrics["verified"]["score"] <= 1.0
    assert metrics["train"]["steps"] == 2
    assert metrics["train"]["final_loss"] == metrics["train"]["final_loss"]  # not NaN

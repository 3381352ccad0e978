"""Fair tuning as a protocol (bench/runs/tuning.py): each method's grid searched on the validation score at one seed,
the best point run at every seed (`bench sweep` with a tune seed), one row per method in `bench leaderboard --tuned`.
The selection never reads a test score."""
from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

import cli
from bench.runs.sweep import SweepSpec, load_spec, run_sweep
from bench.runs.tuning import grid_report, select, validation_of
from bench.store.rundir import RunDir
from leaderboard_kit import make_run

pytestmark = pytest.mark.usefixtures("single_thread_module")


def _cand(method, label, seed, validation):
    return {"method": method, "key": label, "label": label, "seed": seed, "validation": validation}


def test_select_takes_the_best_validation_at_the_tuning_seed_only():
    cands = [_cand("dpo", "beta=0.1", 0, 0.50), _cand("dpo", "beta=0.5", 0, 0.75),
             _cand("dpo", "beta=0.1", 1, 0.99),  # another seed: never looked at
             _cand("sft", "lr=1", 0, 0.30), _cand("sft", "lr=2", 0, 0.30),  # a tie: the first label
             _cand("wpo", "x", 0, None)]  # no validation score: the method is left out
    chosen = select(cands, seed=0)
    assert {m: c["label"] for m, c in chosen.items()} == {"dpo": "beta=0.5", "sft": "lr=1"}
    assert select(cands, seed=1)["dpo"]["label"] == "beta=0.1"
    report = grid_report(cands, 0)
    assert [(r["method"], r["label"], r["chosen"]) for r in report] == [
        ("dpo", "beta=0.5", True), ("dpo", "beta=0.1", False), ("sft", "lr=1", True), ("sft", "lr=2", False),
        ("wpo", "x", False)]


def _board(root):
    """dpo at two betas, 3 seeds each: beta=0.1 is better on validation, beta=0.5 on test."""
    for seed in range(3):
        make_run(root, f"dpo-b01-s{seed}", settings={"beta": 0.1}, seed=seed, validation=0.8 - 0.01 * seed,
                 items={"verified": {"a": 0.2, "b": 0.1}})
        make_run(root, f"dpo-b05-s{seed}", settings={"beta": 0.5}, seed=seed, validation=0.6,
                 items={"verified": {"a": 0.9, "b": 1.0}})
        make_run(root, f"sft-s{seed}", method="sft", seed=seed, validation=0.5, items={"verified": {"a": 0.5, "b": 0.5}})


def _json(*args):
    result = CliRunner().invoke(cli.app, ["leaderboard", "--format", "json", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)["rows"]


def test_leaderboard_tuned_shows_the_validation_choice_not_the_test_best(tmp_path):
    _board(tmp_path)
    full = _json("--runs", str(tmp_path))
    assert sorted(r["settings"] for r in full if r["method_name"] == "dpo") == ["beta=0.1", "beta=0.5"]
    tuned = _json("--runs", str(tmp_path), "--tuned")
    assert [(r["method_name"], r["settings"], r["n_seeds"]) for r in sorted(tuned, key=lambda r: r["method_name"])] \
        == [("dpo", "beta=0.1", 3), ("sft", "", 3)]
    # another tuning seed whose validation ranks the other way chooses the other setting
    make_run(tmp_path, "dpo-b05-s7", settings={"beta": 0.5}, seed=7, validation=0.9, items={"verified": {"a": 1}})
    make_run(tmp_path, "dpo-b01-s7", settings={"beta": 0.1}, seed=7, validation=0.1, items={"verified": {"a": 0}})
    assert {r["settings"] for r in _json("--runs", str(tmp_path), "--tuned", "--tune-seed", "7")
            if r["method_name"] == "dpo"} == {"beta=0.5"}


def test_tuned_selection_ignores_every_test_score(tmp_path):
    """Rewrite all test scores (and their items) at random: the chosen rows stay the same."""
    import random

    _board(tmp_path)
    before = {(r["method_name"], r["settings"]) for r in _json("--runs", str(tmp_path), "--tuned")}
    rng = random.Random(0)
    for d in tmp_path.iterdir():
        if not d.is_dir():
            continue
        items = {"a": rng.random(), "b": rng.random()}
        RunDir(d).update_metrics("verified", {"score": sum(items.values()) / 2, "n": 2, "items": items})
    after = {(r["method_name"], r["settings"]) for r in _json("--runs", str(tmp_path), "--tuned")}
    assert after == before


def test_validation_of_old_runs_reads_the_selected_evaluation(tmp_path):
    (tmp_path / "train_log.json").write_text(json.dumps({"evals": [{"step": 2, "score": 0.25, "selected": False},
                                                                   {"step": 3, "score": 0.5, "selected": True}]}))
    assert validation_of({}, tmp_path) == 0.5
    assert validation_of({"validation": {"score": 0.75}}, tmp_path) == 0.75
    assert validation_of({}, tmp_path / "missing") is None


def test_spec_checks(tmp_path):
    from bench.errors import BenchError

    with pytest.raises(BenchError, match="tune_seed 5 must be one of the seeds"):
        load_spec(None, methods=["dpo"], seeds=[0, 1], tune_seed=5)
    with pytest.raises(BenchError, match=r"grids: \['wpo'\] not among the sweep's methods"):
        load_spec(None, methods=["dpo"], grids={"wpo": {"beta": [0.1]}})


def test_tuned_sweep_runs_the_grid_at_one_seed_then_the_best_point_at_the_others(tiny_dirs, tmp_path):
    runs = tmp_path / "runs"
    spec = SweepSpec(name="tune", methods=["dpo", "sft"], seeds=[0, 1], preset="tiny", student="tiny-random-student",
                     grids={"dpo": {"beta": [0.05, 2.0]}}, tune_seed=0, runs=str(runs),
                     set={"select_by": "reward_accuracy", "student.train.save_every": 0})
    record = run_sweep(spec)
    cells = record["cells"]
    assert [(c["method"], c["seed"], c["status"]) for c in cells][:3] == [
        ("dpo", 0, "done"), ("dpo", 0, "done"), ("sft", 0, "done")]
    phase1 = {c["grid"]["beta"]: validation_of(RunDir(c["run"]).manifest) for c in cells[:2]}
    assert all(v is not None for v in phase1.values())
    best = max(sorted(phase1), key=lambda b: phase1[b])  # the first label wins a tie, as in select()
    assert record["tuning"]["chosen"] == {"dpo": {"beta": best}, "sft": {}}
    assert [(c["method"], c["seed"], c["grid"]) for c in cells[3:]] == [("dpo", 1, {"beta": best}), ("sft", 1, {})]
    again = run_sweep(spec)  # resumable: everything reused, the same choice
    assert {c["status"] for c in again["cells"]} == {"reused"} and again["tuning"]["chosen"] == record["tuning"]["chosen"]

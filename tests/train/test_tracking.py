"""Experiment tracking and progress output: train_log.jsonl written as training goes (and rewritten on resume),
TensorBoard through accelerate's trackers, plain progress lines when stderr is not a terminal, no third-party
progress bars."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.errors import BenchError
from bench.registry import get_method
from bench.train.tracking import Tracking, check_report_to, flat_config
from bench.train.trainer import TrainConfig, train

sys.path.insert(0, str(Path(__file__).parents[1]))
from train_kit import PAD, make_data, tiny_model  # noqa: E402

pytestmark = pytest.mark.usefixtures("single_thread_module")
BENCH = str(Path(sys.executable).parent / "bench")


def read_log(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_train_log_jsonl_is_appended_every_step(tmp_path):
    log = tmp_path / "train_log.jsonl"
    seen_at_eval = []

    def evaluate(model):  # runs inside training: the log already holds every finished step
        seen_at_eval.append([r["step"] for r in read_log(log) if r["event"] == "train"])
        return {"score": 0.5}

    method = get_method("sft")
    res = train(tiny_model(), method, method.make_config(), make_data(), TrainConfig(lr=1e-2, batch_size=2, max_steps=4,
                eval_every=2), pad_id=PAD, work_dir=tmp_path / "work", evaluate=evaluate,
                tracking=Tracking(log_file=log))
    assert seen_at_eval == [[1, 2], [1, 2, 3, 4]]
    records = read_log(log)
    assert [(r["event"], r["step"]) for r in records] == [("train", 1), ("train", 2), ("eval", 2), ("train", 3),
                                                          ("train", 4), ("eval", 4)]
    for r, h in zip([r for r in records if r["event"] == "train"], res.history):
        assert r["loss"] == pytest.approx(h["loss"]) and r["lr"] == pytest.approx(h["lr"])
        assert r["tokens_per_s"] > 0 and r["elapsed_s"] >= 0


def test_a_resumed_run_rewrites_the_log_from_its_saved_state(tmp_path):
    log, work = tmp_path / "train_log.jsonl", tmp_path / "work"
    tcfg = dict(lr=1e-2, batch_size=2, max_steps=4, save_every=2, eval_every=1)
    calls = []

    def dies_at_step_3(model):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("killed after step 3")
        return {"score": 0.0}

    method = get_method("sft")
    with pytest.raises(RuntimeError):
        train(tiny_model(), method, method.make_config(), make_data(), TrainConfig(**tcfg), pad_id=PAD, work_dir=work,
              evaluate=dies_at_step_3, tracking=Tracking(log_file=log))
    assert [r["step"] for r in read_log(log) if r["event"] == "train"] == [1, 2, 3]  # step 3 was not saved
    train(tiny_model(), method, method.make_config(), make_data(), TrainConfig(**tcfg), pad_id=PAD, work_dir=work,
          evaluate=lambda m: {"score": 0.0}, resume=True, tracking=Tracking(log_file=log))
    assert [(r["event"], r["step"]) for r in read_log(log)] == [
        ("train", 1), ("eval", 1), ("train", 2), ("eval", 2), ("train", 3), ("eval", 3), ("train", 4), ("eval", 4)]


def test_tensorboard_tracker_gets_loss_lr_throughput_and_validation(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    method = get_method("sft")
    tracking = Tracking(report_to=check_report_to("tensorboard"), project_dir=tmp_path, run_name="r",
                        config=flat_config({"method": "sft", "train": {"lr": 0.01}}))
    train(tiny_model(), method, method.make_config(), make_data(), TrainConfig(lr=1e-2, batch_size=2, max_steps=3,
          eval_every=3), pad_id=PAD, work_dir=tmp_path / "work", evaluate=lambda m: {"score": 0.25, "n": 4},
          tracking=tracking)
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/lr", "train/tokens_per_s", "val/score"} <= tags
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2, 3]
    assert [e.value for e in events.Scalars("val/score")] == [0.25]


def test_report_to_is_checked_before_any_work(monkeypatch):
    with pytest.raises(BenchError, match="--report-to 'mlflow' is invalid"):
        check_report_to("mlflow")
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(BenchError, match="needs the 'wandb' package"):
        check_report_to("wandb")
    assert check_report_to("none") == "none"


def test_run_with_report_to_tensorboard_writes_events_into_the_run(tiny_dirs, tmp_path):
    proc = subprocess.run([BENCH, "run", "--method", "dpo", "--preset", "tiny", "--runs", str(tmp_path), "--name",
                           "tracked", "--report-to", "tensorboard"], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr
    run = tmp_path / "tracked"
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    steps = [r["step"] for r in read_log(run / "train_log.jsonl") if r["event"] == "train"]
    assert steps == list(range(1, len(steps) + 1)) and steps
    from bench.store.rundir import RunDir

    RunDir.open(run, verify="all")  # the event files are part of the finished run's checksums


def test_plain_progress_lines_without_a_terminal(tiny_dirs, tmp_path):
    """stderr to a pipe, BENCH_PROGRESS unset: one plain line per start/end (and every BENCH_PROGRESS_EVERY
    seconds), no bar characters, no carriage returns, no third-party bars."""
    env = {k: v for k, v in os.environ.items() if k != "BENCH_PROGRESS"}
    proc = subprocess.run([BENCH, "run", "--method", "dpo", "--preset", "tiny", "--runs", str(tmp_path)],
                          capture_output=True, text=True, timeout=300,
                          env={**env, "OMP_NUM_THREADS": "1", "BENCH_PROGRESS_EVERY": "0"})
    assert proc.returncode == 0, proc.stderr
    err = proc.stderr
    assert "\r" not in err and "━" not in err and "it/s]" not in err and "%|" not in err
    lines = [line for line in err.splitlines() if "train dpo:" in line]
    assert lines[0].endswith("train dpo: 0/3 steps (0%)")
    assert any(" 1/3 steps (33%)" in line and "eta" in line for line in lines)  # every step with EVERY=0
    assert "3/3 steps (100%) done in" in lines[-1] and "loss=" in lines[-1] and "tok/s" in lines[-1]


def test_progress_modes(monkeypatch, capsys):
    from bench import progress

    monkeypatch.setenv("BENCH_PROGRESS", "0")
    with progress.progress_bar("quiet", total=2) as bar:
        bar.advance(2)
    assert capsys.readouterr().err == ""
    monkeypatch.setenv("BENCH_PROGRESS", "lines")
    monkeypatch.setenv("BENCH_PROGRESS_EVERY", "3600")
    with progress.progress_bar("work", total=4, unit="items") as bar:
        for _ in range(4):
            bar.advance(1, tokens=10, loss=0.5)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2  # start and end only: the interval is an hour
    assert lines[0].endswith("work: 0/4 items (0%)")
    assert "work: 4/4 items (100%) done in" in lines[1] and "loss=0.5" in lines[1]


def test_gguf_conversion_bar_is_silenced():
    import transformers.modeling_gguf_pytorch_utils as gguf_utils

    from bench.modeling.gguf import quiet_gguf_conversion as _quiet_gguf_conversion

    original = gguf_utils.tqdm
    with _quiet_gguf_conversion():
        assert gguf_utils.tqdm(range(3)).disable  # what the loader gets while converting
    assert gguf_utils.tqdm is original

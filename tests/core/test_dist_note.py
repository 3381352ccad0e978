"""bench.dist.cpu_launch_note: `accelerate launch --cpu` starts one process; the run says so and names the config
that starts N CPU processes."""
from __future__ import annotations

import pytest

from bench import dist


@pytest.mark.parametrize("env,world,expect", [
    ({"ACCELERATE_USE_CPU": "True"}, None, True),  # what `accelerate launch --cpu --num_processes 2` leaves behind
    ({"ACCELERATE_USE_CPU": "true"}, "1", True),
    ({"ACCELERATE_USE_CPU": "True"}, "2", False),  # really several processes: nothing to say
    ({}, None, False),  # a plain `bench run`
    ({"ACCELERATE_USE_CPU": "False"}, None, False),
])
def test_cpu_launch_note(monkeypatch, env, world, expect):
    monkeypatch.delenv("ACCELERATE_USE_CPU", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    if world is not None:
        monkeypatch.setenv("WORLD_SIZE", world)
    note = dist.cpu_launch_note()
    if not expect:
        assert note is None
    else:
        assert note.startswith("note: ") and "configs/accelerate/cpu_ddp.yaml" in note and "\n" not in note


def test_run_prints_the_note_once(monkeypatch, capsys, tiny_dirs, tmp_path):
    from cli_kit import TINY, bench_main

    monkeypatch.setenv("ACCELERATE_USE_CPU", "True")
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    code, _, err = bench_main(monkeypatch, capsys, "run", "--method", "sft", *TINY, "--runs", str(tmp_path / "r"),
                              "--dry-run")
    assert code == 0, err
    assert sum(line.startswith("note: accelerate launch --cpu") for line in err.splitlines()) == 1


@pytest.mark.parametrize("env,needles", [
    ({"ACCELERATE_USE_DEEPSPEED": "true"}, ("DeepSpeed", "does not engage", "fsdp.yaml")),
    ({"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "1", "WORLD_SIZE": "2"}, ("FSDP version 1", "fsdp_version: 2")),
    ({"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "2"}, ("one process", "--num_processes 2")),
])
def test_an_engine_the_trainer_does_not_engage_is_one_error_line(monkeypatch, capsys, tiny_dirs, tmp_path, env,
                                                                 needles):
    """`accelerate launch` with configs/accelerate/deepspeed_zero3.yaml sets ACCELERATE_USE_DEEPSPEED=true, with an
    FSDP config ACCELERATE_USE_FSDP=true and FSDP_VERSION: the trainer shards with FSDP2 over several processes
    (tests/train/test_global_means.py); anything else must not fall back to unsharded DDP silently."""
    from cli_kit import TINY, assert_one_line_error, bench_main

    for v in ("ACCELERATE_USE_FSDP", "ACCELERATE_USE_DEEPSPEED", "FSDP_VERSION", "WORLD_SIZE"):
        monkeypatch.delenv(v, raising=False)
    dist.check_engine()  # nothing asked: nothing to say
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(Exception) as e:
        dist.check_engine()
    assert all(n in str(e.value) for n in needles), str(e.value)
    monkeypatch.delenv("WORLD_SIZE", raising=False)  # the CLI in this (one) process: the same line, nothing written
    if env.get("WORLD_SIZE"):
        return
    code, _, err = bench_main(monkeypatch, capsys, "run", "--method", "sft", *TINY, "--runs", str(tmp_path / "r"))
    assert_one_line_error(code, err, *needles)
    assert not (tmp_path / "r").exists()

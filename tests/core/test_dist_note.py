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

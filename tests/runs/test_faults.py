"""kill -9 at every named point of a run (bench/faults.py), then a rerun or `--resume`: the final weights equal an
uninterrupted run bit for bit, and nothing half-written is left behind."""
from __future__ import annotations

import errno
import json

import pytest

from safety_kit import KILLED, TINY, assert_bitwise_equal, bench, new_cache, run_dirs, weights

pytestmark = [pytest.mark.usefixtures("single_thread_module"), pytest.mark.timeout(600), pytest.mark.heavy]
ARGS = ["run", "--method", "dpo", *TINY, "--name", "r"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, bench_cache, tiny_dirs):
    """An uninterrupted run on its own cache: (cache, run dir)."""
    root = tmp_path_factory.mktemp("fault-ref")
    cache = new_cache(root / "cache", bench_cache)
    proc = bench([*ARGS, "--runs", str(root / "runs")], cache)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return cache, root / "runs" / "r"


def _no_leftovers(cache, runs):
    temps = [p for p in cache.rglob("*") if ".tmp-" in p.name]
    assert not temps, temps
    for run in run_dirs(runs):
        assert not (run / "work").exists() and not (run / ".checkpoint.tmp").exists()


def _same_result(run, ref):
    assert_bitwise_equal(weights(run / "checkpoint"), weights(ref / "checkpoint"))
    a, b = (json.loads((d / "metrics.json").read_text()) for d in (run, ref))
    assert a["verified"]["score"] == b["verified"]["score"]
    assert a["reward_accuracy"] == b["reward_accuracy"]


def test_kill_during_a_stage_build_then_rerun(reference, tmp_path, bench_cache):
    """The first stage build dies after its result is written but before it is published: the temp dir is left
    behind by the kill; the rerun removes it, rebuilds, and gets the uninterrupted run's weights."""
    _, ref = reference
    cache = new_cache(tmp_path / "cache", bench_cache)
    runs = tmp_path / "runs"
    killed = bench([*ARGS, "--runs", str(runs)], cache, fault="stage-build")
    assert killed.returncode == KILLED, killed.stderr[-2000:]
    assert [p for p in cache.rglob("*") if ".tmp-" in p.name]  # the kill left a temp dir
    again = bench([*ARGS, "--runs", str(runs)], cache)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "starting it over" in again.stderr  # its own unfinished run of the same identity, removed
    _same_result(runs / "r", ref)
    _no_leftovers(cache, runs)


@pytest.mark.parametrize("fault,resumes_at", [
    ("state-save:2", "step 2/3"),   # new state published, older one not yet deleted: two complete states
    ("state-write:2", "step 1/3"),  # second state written but not yet renamed into place
    ("final-copy", "step 3/3"),     # training done, checkpoint being copied into the run
    ("test-generation", "step 3/3"),  # checkpoint in place, test generations not yet written
    ("run-publish", "step 3/3"),    # every file written, the run not yet marked finished
])
def test_kill_at_a_named_point_then_resume(reference, tmp_path, fault, resumes_at):
    cache, ref = reference  # stages already built: only the student trains
    runs = tmp_path / "runs"
    killed = bench([*ARGS, "--runs", str(runs)], cache, fault=fault)
    assert killed.returncode == KILLED, killed.stderr[-2000:]
    marker = json.loads((runs / "r" / ".bench-run.json").read_text())
    assert marker["state"] == "running"
    lb = bench(["leaderboard", "--runs", str(runs)], cache)  # an unfinished run never shows as a result
    assert lb.returncode == 2 and "unfinished" in lb.stderr
    resumed = bench([*ARGS, "--runs", str(runs), "--resume"], cache)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming at {resumes_at}" in resumed.stderr
    _same_result(runs / "r", ref)
    _no_leftovers(cache, runs)


def test_resume_from_another_working_directory(reference, tmp_path):
    """Stored paths are relative to the run: a run killed under `cd a; --runs runs` resumes as
    `cd b; --runs ../a/runs`."""
    cache, ref = reference
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    killed = bench([*ARGS, "--runs", "runs"], cache, cwd=tmp_path / "a", fault="state-save:3")
    assert killed.returncode == KILLED
    resumed = bench([*ARGS, "--runs", "../a/runs", "--resume"], cache, cwd=tmp_path / "b")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    _same_result(tmp_path / "a" / "runs" / "r", ref)


def test_disk_full_during_a_state_save_then_resume(reference, tmp_path, monkeypatch, tiny_run_config):
    """ENOSPC while writing the second state: one clean error, the temp dir is gone, the first state survives and
    `--resume` finishes the run with the uninterrupted weights."""
    import bench.train.checkpoint as ckpt
    from bench.runs.run import run_pipeline

    cache, ref = reference
    monkeypatch.setenv("BENCH_CACHE", str(cache))
    original, calls = ckpt.save_file, []

    def full_disk(tensors, path, *a, **kw):
        calls.append(path)
        if len(calls) == 3:  # optimizer file of the second state (1: optimizer, 2: rng of state 1)
            raise OSError(errno.ENOSPC, "No space left on device", path)
        return original(tensors, path, *a, **kw)

    monkeypatch.setattr(ckpt, "save_file", full_disk)
    runs = tmp_path / "runs"
    with pytest.raises(OSError):
        run_pipeline(tiny_run_config(runs, run_name="r"))
    work = runs / "r" / "work"
    assert [p.name for p in work.glob("state-*")] == ["state-00000001"]
    assert not [p for p in work.iterdir() if ".tmp-" in p.name]
    monkeypatch.setattr(ckpt, "save_file", original)
    run_pipeline(tiny_run_config(runs, run_name="r", resume=True))
    _same_result(runs / "r", ref)

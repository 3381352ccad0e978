"""Byte flips and truncation in what the harness wrote: a corrupt cache entry is rebuilt with a warning (never used),
a corrupt run is skipped by the leaderboard with a warning and refused by `bench eval` / a rerun with one line."""
from __future__ import annotations

import json
import shutil

import pytest

from safety_kit import (TINY, assert_bitwise_equal, bench, flip_byte, new_cache, one_error_line, truncate,
                        weights)

pytestmark = [pytest.mark.usefixtures("single_thread_module"), pytest.mark.timeout(600)]
DAMAGE = {"flip": flip_byte, "truncate": truncate}


@pytest.fixture(scope="module")
def world(tmp_path_factory, bench_cache, tiny_dirs):
    """A cache and one finished DPO run `base` (the reference weights)."""
    root = tmp_path_factory.mktemp("integrity")
    cache = new_cache(root / "cache", bench_cache)
    runs = root / "runs"
    proc = bench(["run", "--method", "dpo", *TINY, "--runs", str(runs), "--name", "base"], cache)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return cache, runs


def _student_signal_shard(cache):
    """A shard of a signal entry the student's DPO training reads (the frozen reference's log-probs)."""
    for manifest in sorted((cache / "stages" / "signals").glob("*/manifest.json")):
        if json.loads(manifest.read_text())["key"]["model"].get("stage") == "sft_student":
            return next(manifest.parent.glob("*.safetensors"))
    raise AssertionError("no student signal entry")


def _rerun_equals_base(world, name):
    cache, runs = world
    proc = bench(["run", "--method", "dpo", *TINY, "--runs", str(runs), "--name", name], cache)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_bitwise_equal(weights(runs / name / "checkpoint"), weights(runs / "base" / "checkpoint"))
    return proc


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_a_corrupt_signal_shard_is_rebuilt_never_used(world, damage):
    cache, _ = world
    shard = _student_signal_shard(cache)
    DAMAGE[damage](shard)
    verify = bench(["cache", "verify"], cache)
    assert verify.returncode == 1 and f"CORRUPT {shard.parent}" in verify.stdout and shard.name in verify.stdout
    proc = _rerun_equals_base(world, f"after-signal-{damage}")
    assert "is corrupt" in proc.stderr and "rebuilding" in proc.stderr and shard.name in proc.stderr
    assert bench(["cache", "verify"], cache).returncode == 0


def test_corrupt_student_weights_are_rebuilt_never_trained_on(world):
    cache, _ = world
    (stage,) = [p for p in (cache / "stages" / "sft_student").iterdir() if (p / "stage.json").exists()]
    flip_byte(stage / "model.safetensors", offset=(stage / "model.safetensors").stat().st_size - 3)
    proc = _rerun_equals_base(world, "after-weights")
    assert "sft_student stage" in proc.stderr and "is corrupt" in proc.stderr


@pytest.mark.parametrize("damage", ["flip", "truncate"])
@pytest.mark.parametrize("victim_file", ["metrics.json", "manifest.json"])
def test_a_corrupt_run_is_skipped_refused_and_kept(world, tmp_path, victim_file, damage):
    cache, runs = world
    board = tmp_path / "board"
    board.mkdir()
    shutil.copytree(runs / "base", board / "good")
    shutil.copytree(runs / "base", board / "bad")
    DAMAGE[damage](board / "bad" / victim_file)
    lb = bench(["leaderboard", "--runs", str(board), "--format", "json"], cache)
    assert lb.returncode == 0, lb.stderr[-2000:]
    assert [r["run"] for r in json.loads(lb.stdout)["rows"]] == ["good"]
    warnings = [line for line in lb.stderr.splitlines() if line.startswith("warning: skipped bad")]
    assert len(warnings) == 1 and victim_file in warnings[0]
    one_error_line(bench(["eval", str(board / "bad")], cache), victim_file, "corrupt")
    rerun = bench(["run", "--method", "dpo", *TINY, "--runs", str(board), "--name", "bad"], cache)
    one_error_line(rerun, victim_file, "move the run directory away")
    assert (board / "bad" / victim_file).exists()  # a finished run is never deleted, corrupt or not


def test_cache_verify_fix_deletes_only_corrupt_entries(world):
    cache, _ = world
    shard = _student_signal_shard(cache)
    flip_byte(shard)
    entries_before = {p.parent for p in (cache / "stages").rglob("stage.json")}
    fixed = bench(["cache", "verify", "--fix"], cache)
    assert fixed.returncode == 0 and "deleted" in fixed.stdout
    assert not shard.parent.exists()
    assert {p.parent for p in (cache / "stages").rglob("stage.json")} == entries_before
    ok = bench(["cache", "verify", "--runs", str(world[1])], cache)
    assert ok.returncode == 0 and ": 0 corrupt" in ok.stdout
    _rerun_equals_base(world, "after-fix")  # the deleted entry is simply rebuilt

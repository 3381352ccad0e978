"""`bench sweep` on tiny models: a grid of methods × settings × seeds through the same pipeline as `bench run`;
shared stages built once, a failing cell recorded while the sweep goes on, a rerun only finishes what is missing,
parallel cells, the dry run and the shipped sweep files."""
from __future__ import annotations

import json
import os

import pytest

from safety_kit import bench, new_cache
from bench.paths import CONFIG_DIR

pytestmark = [pytest.mark.usefixtures("single_thread_module"), pytest.mark.timeout(900), pytest.mark.heavy]
TINY = ["--preset", "tiny", "--student", "tiny-random-student"]


@pytest.fixture()
def cache(tmp_path, bench_cache, tiny_dirs):
    return new_cache(tmp_path / "cache", bench_cache)


def _record(runs, name="sweep"):
    return json.loads((runs / ".sweeps" / f"{name}.json").read_text())


def _stage_dirs(cache, kind):
    return [p for p in (cache / "stages" / kind).iterdir() if (p / "stage.json").exists()]


def test_grid_failure_and_rerun(cache, tmp_path):
    runs = tmp_path / "runs"
    # the lr=1e38 cells diverge: they fail with their one-line error while the other cells finish
    args = ["sweep", "--methods", "dpo,dckd", "--seeds", "0,1", "--grid", "student.train.lr=1e-3,1e38",
            "--grid", "beta=0.05,0.1", "--set", "student.train.save_every=0", *TINY, "--runs", str(runs)]
    first = bench(args, cache)
    assert first.returncode == 1, first.stderr[-3000:]
    rec = _record(runs)
    cells = rec["cells"]
    assert len(cells) == 2 * 2 * 2 + 2 * 2  # dpo: lr × beta × seeds; dckd has no beta: lr × seeds
    failed = [c for c in cells if c["status"] == "failed"]
    assert {c["grid"]["student.train.lr"] for c in failed} == {1e38} and len(failed) == 6
    assert all("loss became" in c["error"] for c in failed)
    assert all(c["status"] == "done" and os.path.isdir(c["run"]) for c in cells if c not in failed)
    assert "6 trained, 0 reused, 6 failed" in first.stdout
    for kind in ("ref_teacher", "dpo_teacher", "sft_student"):  # shared stages built once for all cells
        assert len(_stage_dirs(cache, kind)) == 1
    again = bench(args, cache)
    assert "0 trained, 6 reused, 6 failed" in again.stdout
    board = bench(["leaderboard", "--runs", str(runs), "--format", "json"], cache)
    rows = json.loads(board.stdout)["rows"]
    assert sorted(r["n_seeds"] for r in rows) == [2, 2, 2] and {r["method"] for r in rows} == {"DPO", "DCKD"}


def test_parallel_cells_share_stages_through_the_locks(cache, tmp_path):
    runs = tmp_path / "runs"
    proc = bench(["sweep", "--methods", "dpo,dckd", "--seeds", "0,1", "--jobs", "2", *TINY, "--runs", str(runs)],
                 cache)
    assert proc.returncode == 0, proc.stderr[-3000:]
    cells = _record(runs)["cells"]
    assert [c["status"] for c in cells] == ["done"] * 4 and all(os.path.exists(c["log"]) for c in cells)
    for kind in ("ref_teacher", "dpo_teacher", "sft_student"):
        assert len(_stage_dirs(cache, kind)) == 1


def test_dry_run_lists_cells_and_what_each_would_build(cache, tmp_path):
    runs = tmp_path / "runs"
    base = ["sweep", "--methods", "dpo", "--seeds", "0", *TINY, "--runs", str(runs)]
    plan = bench([*base, "--dry-run"], cache)
    assert plan.returncode == 0, plan.stderr[-2000:]
    assert "dpo seed 0: to run" in plan.stdout and "build  sft_student stage" in plan.stdout
    assert not runs.exists() or not any(p for p in runs.iterdir() if not p.name.startswith("."))  # ran nothing
    assert bench(base, cache).returncode == 0
    plan = bench([*base, "--dry-run"], cache)
    assert "dpo seed 0: finished: reused" in plan.stdout


def test_shipped_sweep_files_expand_and_bad_files_are_one_line(tmp_path):
    from bench.errors import BenchError
    from bench.runs.sweep import expand, load_spec

    main = load_spec("embedded-main")
    assert main.name == "embedded-main" and main.seeds == [0, 1, 2]
    assert len(expand(main)) == 7 * 3
    paper = load_spec(str(CONFIG_DIR / "sweeps" / "paper-main.yaml"))
    assert paper.preset == "paper" and len(expand(paper)) == len(paper.methods) * 3
    bad = tmp_path / "bad.yaml"
    bad.write_text("methods: [dpo]\nsedes: [0]\n")
    with pytest.raises(BenchError, match="unknown keys"):
        load_spec(str(bad))
    with pytest.raises(BenchError, match="not a setting"):
        expand(load_spec(None, methods=["dckd"], set={"nope": 1}))
    with pytest.raises(BenchError, match="needs methods"):
        load_spec(None)

"""Run names and run directories: a name is one folder inside --runs, nothing outside it is ever touched, a
finished run is never deleted, and a failed run leaves no directory behind."""
from __future__ import annotations

import json
import os

import pytest

from safety_kit import TINY, bench, new_cache, one_error_line, run_dirs

pytestmark = [pytest.mark.usefixtures("single_thread_module"), pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def cache(tmp_path_factory, bench_cache, tiny_dirs):
    return new_cache(tmp_path_factory.mktemp("paths") / "cache", bench_cache)


def _victim(path):
    path.mkdir(parents=True)
    (path / "precious.txt").write_text("user data")
    return path


def _intact(path):
    assert (path / "precious.txt").read_text() == "user data"


@pytest.mark.parametrize("name", [".", "..", "/abs/dir", "a/b", "../victim", "", "x" * 201, "sp ace", "ü"])
def test_bad_run_names_are_refused_before_any_work(name, tmp_path, cache):
    runs = tmp_path / "runs"
    earlier = _victim(runs / "earlier-run")
    victim = _victim(tmp_path / "victim")
    proc = bench(["run", "--method", "dpo", *TINY, "--runs", str(runs), "--name", name], cache)
    one_error_line(proc, "run name")
    _intact(earlier)
    _intact(victim)
    assert sorted(p.name for p in runs.iterdir()) == ["earlier-run"]


def test_a_symlink_inside_runs_is_refused(tmp_path, cache):
    runs = tmp_path / "runs"
    victim = _victim(tmp_path / "victim")
    runs.mkdir()
    (runs / "link").symlink_to(victim, target_is_directory=True)
    proc = bench(["run", "--method", "dpo", *TINY, "--runs", str(runs), "--name", "link"], cache)
    one_error_line(proc, "symbolic link")
    _intact(victim)
    assert (runs / "link").is_symlink()


def test_a_folder_that_is_not_a_run_is_never_deleted(tmp_path, cache):
    runs = tmp_path / "runs"
    mine = _victim(runs / "mine")
    proc = bench(["run", "--method", "dpo", *TINY, "--runs", str(runs), "--name", "mine"], cache)
    one_error_line(proc, "not a bench run directory")
    _intact(mine)


def test_a_finished_run_is_reused_and_never_replaced_by_another_config(tmp_path, cache):
    runs = tmp_path / "runs"
    base = ["run", "--method", "dpo", *TINY, "--runs", str(runs), "--name", "kept"]
    assert bench(base, cache).returncode == 0
    before = {p.name: p.stat().st_mtime_ns for p in (runs / "kept").rglob("*")}
    again = bench(base, cache)
    assert again.returncode == 0 and "reusing it" in again.stderr
    other = bench([*base, "--set", "beta=0.2"], cache)  # same name, different configuration
    one_error_line(other, "holds a finished run of a different configuration", "settings.beta")
    assert {p.name: p.stat().st_mtime_ns for p in (runs / "kept").rglob("*")} == before  # untouched
    marker = json.loads((runs / "kept" / ".bench-run.json").read_text())
    assert marker["state"] == "finished"


def test_a_failed_run_leaves_no_run_directory(tmp_path, cache):
    """The loss blows up mid-training (no resumable state yet): one error line, and no trace of the run."""
    runs = tmp_path / "runs"
    proc = bench(["run", "--method", "dpo", *TINY, "--runs", str(runs), "--set", "student.train.lr=1e38",
                  "--set", "student.train.save_every=0"], cache)
    one_error_line(proc, "loss became")
    assert run_dirs(runs) == []


def test_default_names_are_valid_for_any_student_or_dataset_string(tmp_path):
    from bench.config import RunConfig
    from bench.store.rundir import validate_run_name
    from bench.runs.run import default_run_name

    cfg = RunConfig(method="dpo", student="/home/me/my models/ckpt v2", dataset="../data/prefs (new).jsonl")
    name = default_run_name(cfg, "0123456789abcdef")
    assert validate_run_name(name) == name and name.endswith("-01234567") and "/" not in name
    assert os.sep not in name and ".." not in name.split("-")

"""Every bad path a user can name ends in one `error:` line that names the fix: exit 2, no traceback, nothing
created."""
from __future__ import annotations

import os

import pytest

from safety_kit import TINY, bench, new_cache, one_error_line

pytestmark = [pytest.mark.usefixtures("single_thread_module"), pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def cache(tmp_path_factory, bench_cache, tiny_dirs):
    return new_cache(tmp_path_factory.mktemp("errors") / "cache", bench_cache)


def _a_file(tmp_path):
    f = tmp_path / "plain-file"
    f.write_text("not a folder")
    return f


def test_runs_that_is_a_file_or_lies_under_a_file(cache, tmp_path):
    f = _a_file(tmp_path)
    one_error_line(bench(["run", "--method", "dpo", *TINY, "--runs", str(f)], cache), "--runs", "not a directory")
    one_error_line(bench(["run", "--method", "dpo", *TINY, "--runs", str(f / "runs")], cache), "--runs",
                   "writable directory")
    assert f.read_text() == "not a folder"


@pytest.mark.skipif(os.geteuid() == 0, reason="root bypasses file permissions; the file/under-a-file cases run")
def test_runs_without_write_permission(cache, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        one_error_line(bench(["run", "--method", "dpo", *TINY, "--runs", str(ro)], cache), "cannot write")
    finally:
        ro.chmod(0o755)


@pytest.mark.parametrize("where", ["file", "under-file"])
def test_an_unusable_cache_names_bench_cache(cache, tmp_path, where):
    f = _a_file(tmp_path)
    target = f if where == "file" else f / "cache"
    proc = bench(["run", "--method", "dpo", *TINY, "--runs", str(tmp_path / "runs")], target)
    line = one_error_line(proc, "BENCH_CACHE")
    assert "tokenizer" not in line
    assert not (tmp_path / "runs").exists()


@pytest.fixture(scope="module")
def finished_runs(cache, tmp_path_factory):
    """One finished tiny DPO run, for the leaderboard cases (they only read it)."""
    runs = tmp_path_factory.mktemp("leaderboard") / "runs"
    assert bench(["run", "--method", "dpo", *TINY, "--runs", str(runs)], cache).returncode == 0
    return runs


@pytest.mark.parametrize("option", ["--plot", "--output", "--radar"])
def test_leaderboard_outputs_into_a_missing_folder(cache, finished_runs, tmp_path, option):
    runs = finished_runs
    proc = bench(["leaderboard", "--runs", str(runs), option, str(tmp_path / "no" / "such" / "out.png")], cache)
    one_error_line(proc, option, "does not exist")
    proc = bench(["leaderboard", "--runs", str(runs), option, str(tmp_path)], cache)
    one_error_line(proc, option, "is a directory")


def test_eval_of_a_folder_that_is_not_a_run(cache, tmp_path):
    (tmp_path / "x").mkdir()
    one_error_line(bench(["eval", str(tmp_path / "x")], cache), "not a finished run directory")
    one_error_line(bench(["eval", str(tmp_path / "missing")], cache), "not a run directory")

"""The CLI a new user meets: --version, presets that name their models, --dry-run, `bench eval`'s result table,
help and tables readable at any width, -o for every format, a Ctrl-C that prints the resume command, files
readable by others (0644)."""
from __future__ import annotations

import json
import os
import shlex
import signal
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from bench.config import RunConfig, resolve_models

BENCH = str(Path(sys.executable).parent / "bench")
pytestmark = pytest.mark.usefixtures("single_thread_module")


def _default_sigint() -> None:
    """A suite started in the background (`make test &`) ignores SIGINT, and children inherit that: give the child
    the default disposition so its Python turns a Ctrl-C into KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def bench(*args: str, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([BENCH, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}, preexec_fn=_default_sigint)


def test_version():
    from importlib.metadata import version

    proc = bench("--version")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"prefdistill-bench {version('prefdistill-bench')}")


def test_presets_name_their_models():
    tiny = resolve_models(RunConfig(method="dpo", preset="tiny"), {"student": "tiny-random-student",
                                                                    "teacher": "tiny-random"})
    assert (tiny.student, tiny.teacher) == ("tiny-random-student", "tiny-random")
    # another student keeps its own pair's teacher (None: configs/pairs.yaml), an explicit teacher wins
    other = resolve_models(RunConfig(method="dpo", student="smollm2-135m-l12"), {"student": "tiny-random-student",
                                                                                 "teacher": "tiny-random"})
    assert (other.student, other.teacher) == ("smollm2-135m-l12", None)
    given = resolve_models(RunConfig(method="dpo", teacher="x"), {"student": "s", "teacher": "t"})
    assert (given.student, given.teacher) == ("s", "x")
    assert resolve_models(RunConfig(method="dpo"), None).student == "smollm2-135m-l12"


def test_preset_tiny_is_tiny_throughout_and_dry_run_builds_nothing(tiny_dirs, tmp_path):
    runs = tmp_path / "runs"
    proc = bench("run", "--method", "dpo", "--preset", "tiny", "--runs", str(runs), "--dry-run")
    assert proc.returncode == 0, proc.stderr
    lines = dict(line.split(None, 1) for line in proc.stdout.splitlines()[:9])
    assert lines["student"].startswith("tiny-random-student") and lines["teacher"] == "tiny-random"
    assert "smollm2" not in proc.stdout
    assert "dry run: nothing was trained" in proc.stdout
    assert not runs.exists()


def test_dry_run_lists_exactly_the_stages_a_run_builds(tiny_dirs, tmp_path):
    from bench.paths import cache_root
    from bench.runs.plan import dry_run
    from bench.runs.run import run_pipeline

    import uuid

    tag = uuid.uuid4().hex[:8]  # data no run has used, even on a reused test cache: every stage is new
    data = tmp_path / "mine.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"Dry question {i} ({tag})?", "chosen": f"Yes {i}.",
                                        "rejected": f"No {i}."}) + "\n" for i in range(24)))
    cfg = RunConfig(method="dpo", preset="tiny", dataset=str(data), runs_dir=str(tmp_path / "runs"))
    before = dry_run(cfg)
    assert any("(new)" in line for line in before[:1])
    to_build = [line.split()[-1] for line in before if line.startswith("  build ")]
    assert to_build and all(not (cache_root() / p).exists() for p in to_build)
    run = run_pipeline(cfg)
    assert all((cache_root() / p).exists() for p in to_build)  # the plan named the stages the run built
    after = dry_run(cfg)
    assert "finished: `bench run` reuses it" in after[0]
    summary = next(line for line in after if line.startswith("stages the run needs"))
    assert "0 to build" in summary
    manifest = json.loads((run.path / "manifest.json").read_text())
    assert set(to_build) <= set(manifest["cache_entries"])  # the run records what it used


def test_eval_prints_a_result_table_and_writes_it_with_o(tiny_dpo_run, tmp_path):
    run, _ = tiny_dpo_run
    copy = tmp_path / run.path.name
    shutil.copytree(run.path, copy)
    out = tmp_path / "eval.txt"
    proc = bench("eval", str(copy), "--suite", "reward_accuracy", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((copy / "metrics.json").read_text())
    header, rule, row = proc.stdout.splitlines()[:3]
    assert header.split() == ["run", "evaluator", "score", "n"]
    assert row.split() == [copy.name, "reward_accuracy", f"{metrics['reward_accuracy']['score']:.4g}",
                           str(metrics["reward_accuracy"]["n"])]
    assert out.read_text() == proc.stdout


def test_help_is_never_cut_at_a_narrow_terminal():
    proc = bench("run", "--help", env={"COLUMNS": "40"})
    assert proc.returncode == 0
    assert "…" not in proc.stdout and "..." not in proc.stdout
    for option in ("--method", "--student", "--teacher", "--dataset", "--preset", "--dry-run", "--report-to",
                   "--resume"):
        assert option in proc.stdout, option
    top = bench("--help", env={"COLUMNS": "40"}).stdout
    for line in ("run ", "methods ", "eval ", "cache "):
        assert any(row.strip().startswith(line.strip()) and "..." not in row for row in top.splitlines()), line


def test_methods_output_keeps_every_setting_whole_at_any_width(tmp_path):
    infos = json.loads(bench("methods", "--format", "json").stdout)
    proc = bench("methods", env={"COLUMNS": "40"})
    assert proc.returncode == 0 and "…" not in proc.stdout
    for info in infos:
        assert f"{info['name']}  {info['display_name']}" in proc.stdout
        for s in info["settings"]:
            assert f"  {s['name']}={s['default']}  ({s['source']})" in proc.stdout, (info["name"], s["name"])
    for fmt in ("table", "json"):
        out = tmp_path / f"methods.{fmt}"
        res = bench("methods", "--format", fmt, "-o", str(out))
        assert res.returncode == 0 and out.read_text().strip() == res.stdout.strip()


def test_tables_turn_into_blocks_on_a_narrow_terminal():
    from bench.textout import table

    rows = [["dpo-tiny-random-student-embedded-s0-14fa33df", "reward_accuracy", "0.6667", 6]]
    wide = table(["run", "evaluator", "score", "n"], rows)
    assert len(wide.splitlines()) == 3 and rows[0][0] in wide
    narrow = table(["run", "evaluator", "score", "n"], rows, width=40)
    lines = narrow.splitlines()
    assert lines[0].startswith("run") and "evaluator  reward_accuracy" in lines
    assert all(str(v) in narrow for v in rows[0])  # every value whole
    assert all(len(line) <= 40 or " " not in line.strip() for line in lines)  # only an unbreakable value is wider


def test_leaderboard_table_output_file(tiny_dpo_run, tmp_path):
    run, cfg = tiny_dpo_run
    out = tmp_path / "board.txt"
    proc = bench("leaderboard", "--runs", cfg.runs_dir, "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    assert out.read_text().strip() and "DPO" in out.read_text()


def test_ctrl_c_prints_the_exact_resume_command_which_works(tiny_dirs, tmp_path):
    runs = tmp_path / "runs"
    args = ["run", "--method", "dpo", "--preset", "tiny", "--runs", str(runs), "--name", "interrupted"]
    # a real SIGINT, delivered while the second training state is being saved
    proc = bench(*args, env={"BENCH_FAULT": "state-save:2:sigint"})
    assert proc.returncode == 130, proc.stderr
    assert "Traceback" not in proc.stderr
    line = next(line for line in proc.stderr.splitlines() if "continue it with: " in line)
    command = line.split("continue it with: ", 1)[1]
    assert shlex.split(command) == ["bench", *args, "--resume"]
    resumed = bench(*shlex.split(command)[1:])
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stderr
    assert (runs / "interrupted" / "metrics.json").exists()


def test_ctrl_c_without_a_saved_state_still_says_how_to_continue(tiny_dirs, tmp_path):
    args = ["run", "--method", "dpo", "--preset", "tiny", "--runs", str(tmp_path / "runs"), "--set",
            "student.train.save_every=0", "--set", "student.train.eval_every=1"]
    proc = bench(*args, env={"BENCH_FAULT": "final-copy:1:sigint"})
    assert proc.returncode == 130, proc.stderr
    assert "Traceback" not in proc.stderr
    assert f"continue with: bench {' '.join(shlex.quote(a) for a in args)} --resume" in proc.stderr
    # nothing resumable: the unfinished run is not left behind (only the runs folder's lock files are)
    assert [p.name for p in (tmp_path / "runs").iterdir() if not p.name.startswith(".")] == []


def test_run_and_cache_files_are_readable_by_others(tiny_dpo_run, bench_cache):
    umask = os.umask(0)
    os.umask(umask)
    if umask & 0o044:
        pytest.skip(f"umask {umask:o} hides files from others anyway")
    run, _ = tiny_dpo_run
    files = [p for p in run.path.rglob("*") if p.is_file()]
    assert any(p.suffix == ".safetensors" for p in files)  # safetensors writes 0600 on its own
    from bench.paths import cache_root

    entries = json.loads((run.path / "manifest.json").read_text())["cache_entries"]
    stage = next(Path(e) for e in entries if e.startswith("stages/sft_student/"))
    files += [p for p in (cache_root() / stage).rglob("*") if p.is_file()]
    for p in files:
        mode = stat.S_IMODE(p.stat().st_mode)
        assert mode & 0o044 == 0o044, (p, oct(mode))

"""cli.py: the user-facing contract. Errors exit 2 with one `error: ...` line on stderr and no traceback;
`bench methods` and `bench leaderboard` output parses."""
from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import cli
from cli_kit import TINY, assert_one_line_error, bench_main  # noqa: F401
from bench.errors import BenchError
from bench.store.rundir import RunDir

# the console script of the interpreter running the tests (the venv need not be activated)
BENCH = str(Path(sys.executable).parent / "bench")

pytestmark = pytest.mark.usefixtures("single_thread_module")

runner = CliRunner()
@pytest.fixture()
def bad_rows_file(tmp_path) -> Path:
    rows = [
        {"prompt": "What is 2+2?", "chosen": "4", "rejected": "5"},
        {"prompt": "What is 3+3?", "chosen": "6"},  # no "rejected"
    ]
    path = tmp_path / "prefs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# ---------------------------------------------------------------- error contract (the console-script entry point)


ERROR_CASES = {
    "unknown-method": (["run", "--method", "nosuch"], ["unknown method 'nosuch'", "dpo", "sft"]),
    "unknown-teacher": (["run", "--method", "dpo", *TINY, "--teacher", "nosuch-model"],
                        ["unknown model 'nosuch-model'"]),
    "unknown-student": (["run", "--method", "dpo", "--student", "nosuch-model"], ["nosuch-model"]),
    "unknown-dataset": (["run", "--method", "dpo", *TINY, "--dataset", "nosuch-data"],
                        ["unknown dataset 'nosuch-data'", "embedded"]),
    "missing-dataset-file": (["run", "--method", "dpo", *TINY, "--dataset", "./no/such/file.jsonl"],
                             ["not found"]),
    "unknown-preset": (["run", "--method", "dpo", "--student", "tiny-random-student", "--preset", "nope"],
                       ["unknown run preset 'nope'", "tiny"]),
    "set-without-equals": (["run", "--method", "dpo", *TINY, "--set", "beta"], ["key=value"]),
    "set-unknown-key": (["run", "--method", "dpo", *TINY, "--set", "gamma=1"], ["gamma", "beta"]),
    "set-wrong-type": (["run", "--method", "dpo", *TINY, "--set", "beta=abc"], ["beta", "float"]),
    "set-out-of-range": (["run", "--method", "dpo", *TINY, "--set", "beta=-1"], ["beta", ">= 0"]),
    "set-nan": (["run", "--method", "dpo", *TINY, "--set", "beta=nan"], ["beta"]),
    "set-bad-section": (["run", "--method", "dpo", *TINY, "--set", "k.x=1"], ["k.x"]),
    "set-bad-size": (["run", "--method", "dpo", *TINY, "--set", "sizes.pref_trian=5"], ["pref_trian"]),
    "methods-bad-format": (["methods", "--format", "xml"], ["xml"]),
    "eval-bad-set": (["eval", "no-such-run", "--set", "teacher_kl_n"], ["teacher_kl_n", "key=value"]),
    "align-bad-format": (["align", "--student", "tiny-random-student", "--teacher", "tiny-random", "--format", "xml"],
                         ["xml", "table or json"]),
    "align-bad-limit": (["align", "--student", "tiny-random-student", "--teacher", "tiny-random", "--limit", "0"],
                        ["--limit 0"]),
}


@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_errors_exit_2_with_one_error_line(case, monkeypatch, capsys, tiny_dirs):
    args, needles = ERROR_CASES[case]
    code, out, err = bench_main(monkeypatch, capsys, *args)
    assert_one_line_error(code, err, *needles)


def test_malformed_local_dataset_row(bad_rows_file, monkeypatch, capsys, tiny_dirs):
    code, _, err = bench_main(monkeypatch, capsys, "run", "--method", "dpo", *TINY, "--dataset", str(bad_rows_file))
    line = assert_one_line_error(code, err, "prefs.jsonl")
    assert "rejected" in line and ("line 2" in line or "row 2" in line or "row 1" in line)


def test_teacher_with_another_vocabulary_is_refused(tiny_dirs, tmp_path, monkeypatch, capsys):
    from bench.modeling.models import load_model, load_tokenizer

    teacher = tmp_path / "other-vocab-teacher"
    load_model("tiny-random").save_pretrained(teacher)
    tok = load_tokenizer("tiny-random")
    tok.add_tokens(["<an-extra-token>"])
    tok.save_pretrained(teacher)
    # a method that reads token-level teacher signals in the student's vocabulary cannot cross; DPO could (it
    # reads no teacher signal) and ULD, GOLD, Vanilla KD, DCKD, ADPA, TVKD, DDPO distil through the alignment
    # (tests/runs/)
    code, _, err = bench_main(monkeypatch, capsys, "run", "--method", "atkd", *TINY, "--teacher", str(teacher),
                              "--runs", str(tmp_path / "runs"))
    assert_one_line_error(code, err, "tokenize differently", "methods that run across tokenizers")
    assert not (tmp_path / "runs").exists()


def test_student_dir_without_tokenizer_is_a_clean_error(tiny_dirs, tmp_path, monkeypatch, capsys):
    """`--student DIR` where DIR holds weights but no tokenizer: one `error:` line, exit 2 (today: ValueError
    traceback from AutoTokenizer, which load_tokenizer does not catch)."""
    from bench.modeling.models import load_model

    student = tmp_path / "weights-only"
    load_model("tiny-random-student").save_pretrained(student)
    code, _, err = bench_main(monkeypatch, capsys, "run", "--method", "dpo", "--student", str(student),
                              "--teacher", "tiny-random", "--preset", "tiny", "--runs", str(tmp_path / "runs"))
    assert_one_line_error(code, err, "weights-only")


def test_unknown_student_error_names_the_unknown_model(monkeypatch, capsys, tiny_dirs):
    """A misspelt --student must be reported as an unknown model (like a misspelt --teacher), not as 'no default
    teacher ...; pass --teacher', which sends the user to the wrong flag."""
    code, _, err = bench_main(monkeypatch, capsys, "run", "--method", "dpo", "--student", "nosuch-model")
    assert_one_line_error(code, err, "unknown model 'nosuch-model'")


def test_mistyped_stage_setting_is_a_clean_error(tiny_dpo_run, tmp_path, monkeypatch, capsys):
    """`--set student.train.lr=abc` must end as one `error:` line with exit 2, not a TypeError traceback."""
    code, _, err = bench_main(monkeypatch, capsys, "run", "--method", "dpo", *TINY, "--runs", str(tmp_path),
                              "--set", "student.train.lr=abc")
    assert_one_line_error(code, err, "lr")


def test_leaderboard_missing_or_empty_runs_dir(tmp_path, monkeypatch, capsys):
    code, _, err = bench_main(monkeypatch, capsys, "leaderboard", "--runs", str(tmp_path / "nope"))
    assert_one_line_error(code, err, "does not exist")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "not-a-run").mkdir()
    code, _, err = bench_main(monkeypatch, capsys, "leaderboard", "--runs", str(tmp_path / "empty"))
    assert_one_line_error(code, err, "no finished runs under")


@pytest.mark.parametrize("args,needle", [
    (["run", "--method", "nosuch"], "unknown method 'nosuch'"),
    (["run", "--method", "dpo", "--set", "beta=-1"], "beta"),
])
def test_console_script_contract(args, needle):
    proc = subprocess.run([BENCH, *args], capture_output=True, text=True, timeout=120)
    assert_one_line_error(proc.returncode, proc.stderr, needle)
    assert proc.stdout == ""


def test_console_script_malformed_dataset(bad_rows_file, tiny_dirs):
    proc = subprocess.run([BENCH, "run", "--method", "sft", *TINY, "--dataset", str(bad_rows_file)],
                          capture_output=True, text=True, timeout=180)
    assert_one_line_error(proc.returncode, proc.stderr, "prefs.jsonl")


# ---------------------------------------------------------------- CliRunner on the Typer app


def test_app_raises_bench_errors_for_main_to_print():
    result = runner.invoke(cli.app, ["run", "--method", "nosuch"])
    assert isinstance(result.exception, BenchError)
    assert "unknown method 'nosuch'" in str(result.exception)
    result = runner.invoke(cli.app, ["leaderboard", "--format", "md", "--runs", "/no/such/runs/dir"])
    assert isinstance(result.exception, BenchError)


def test_methods_json_lists_settings_defaults_and_sources():
    result = runner.invoke(cli.app, ["methods", "--format", "json"])
    assert result.exit_code == 0, result.output
    infos = json.loads(result.stdout)
    by_name = {i["name"]: i for i in infos}
    assert {"sft", "dpo"} <= set(by_name)
    dpo = by_name["dpo"]
    assert dpo["display_name"] == "DPO" and dpo["citation"]
    assert dpo["sides"] == ["chosen", "rejected"]
    assert dpo["signals"] == ["reference.logps.chosen", "reference.logps.rejected"]
    beta = {s["name"]: s for s in dpo["settings"]}["beta"]
    assert beta["default"] == 0.05 and beta["type"] == "float" and beta["source"]
    assert by_name["sft"]["settings"] == [] and by_name["sft"]["sides"] == ["chosen"]
    for info in infos:
        for s in info["settings"]:
            assert {"name", "type", "default", "source", "help"} <= set(s), (info["name"], s)


def test_methods_table():
    result = runner.invoke(cli.app, ["methods"])
    assert result.exit_code == 0
    assert "dpo" in result.stdout and "beta=0.05" in result.stdout


@pytest.fixture(scope="module")
def runs_dir(tiny_dpo_run, tmp_path_factory) -> Path:
    """Two run directories (the shared tiny DPO run and a copy with other settings/scores) plus a non-run dir."""
    run, _ = tiny_dpo_run
    root = tmp_path_factory.mktemp("board")
    a, b = root / run.path.name, root / "dpo-beta-0.2"
    for d in (a, b):
        d.mkdir()
        for name in ("manifest.json", "metrics.json"):
            shutil.copy(run.path / name, d / name)
    manifest = json.loads((b / "manifest.json").read_text())
    manifest["config"]["method_settings"] = {"beta": "0.2"}
    manifest["method_settings"]["beta"] = 0.2
    manifest["run_id"] = b.name
    (b / "manifest.json").write_text(json.dumps(manifest))
    metrics = json.loads((b / "metrics.json").read_text())
    metrics["verified"]["score"] = 0.75
    metrics["reward_accuracy"]["score"] = 0.5
    for section in ("verified", "reward_accuracy"):  # doctored scores: their per-item scores no longer apply
        metrics[section].pop("items", None)
    (b / "metrics.json").write_text(json.dumps(metrics))
    for d in (a, b):  # finished runs: marker with checksums
        RunDir(d).begin(d.name, {})
        RunDir(d).finish()
    (root / "scratch").mkdir()  # not a run: ignored
    return root


def test_leaderboard_json(runs_dir):
    result = runner.invoke(cli.app, ["leaderboard", "--runs", str(runs_dir), "--format", "json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    rows = out["rows"]
    assert len(rows) == 2 and out["units"]["verified"] == "%"
    assert {r["run"] for r in rows} == {p.name for p in runs_dir.iterdir() if (p / "manifest.json").exists()}
    by_run = {r["run"]: r for r in rows}
    assert by_run["dpo-beta-0.2"]["verified"] == 75.0 and by_run["dpo-beta-0.2"]["reward_acc"] == 50.0
    assert by_run["dpo-beta-0.2"]["settings"] == "beta=0.2,preset=tiny"
    for r in rows:
        assert r["method"] == "DPO" and r["student"] == "tiny-random-student" and r["teacher"] == "tiny-random"
        assert 0 <= r["verified"] <= 100 and 0 <= r["reward_acc"] <= 100 and r["n_seeds"] == 1
    assert rows[0]["run"] == "dpo-beta-0.2"  # best verified first


def test_leaderboard_csv(runs_dir):
    result = runner.invoke(cli.app, ["leaderboard", "--runs", str(runs_dir), "--format", "csv"])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout.strip() + "\n")))
    assert len(rows) == 2
    for col in ("run", "method", "settings", "verified (%)", "reward acc (%)", "seeds"):
        assert col in rows[0], col
    assert not any(c.startswith(("RM", "MT-Bench")) for c in rows[0])  # only metrics some run has
    assert {float(r["verified (%)"]) for r in rows} >= {75.0}


def test_leaderboard_markdown_and_output_file(runs_dir, tmp_path):
    out = tmp_path / "board.md"
    result = runner.invoke(cli.app, ["leaderboard", "--runs", str(runs_dir), "--format", "md", "-o", str(out)])
    assert result.exit_code == 0, result.output
    table = [line for line in result.stdout.splitlines() if line.startswith("|")]
    header = [c.strip() for c in table[0].strip("|").split("|")]
    assert header[:6] == ["method", "settings", "student", "teacher", "dataset", "seeds"]
    assert {"verified (%)", "reward acc (%)"} <= set(header)
    assert len(table) == 2 + 2  # header, rule, one row per run
    assert "**75.0**" in result.stdout  # percent columns x100, best in bold
    assert out.read_text().strip() == result.stdout.strip()  # -o writes the same table


def test_leaderboard_table_and_plot(runs_dir, tmp_path):
    png = tmp_path / "board.png"
    result = runner.invoke(cli.app, ["leaderboard", "--runs", str(runs_dir), "--plot", str(png)])
    assert result.exit_code == 0, result.output
    assert "DPO" in result.stdout and "verified" in result.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 1000


def test_leaderboard_unknown_method_and_missing_metrics(tiny_dpo_run, tmp_path):
    run, _ = tiny_dpo_run
    ghost = tmp_path / "runs" / "ghost-run"
    ghost.mkdir(parents=True)
    manifest = json.loads((run.path / "manifest.json").read_text())
    manifest["method"] = "ghost_method_not_installed"
    (ghost / "manifest.json").write_text(json.dumps(manifest))  # and no metrics.json (evaluation never ran)
    ghost_run = RunDir(ghost)
    ghost_run.begin("ghost", {})
    ghost_run.finish()
    result = runner.invoke(cli.app, ["leaderboard", "--runs", str(tmp_path / "runs"), "--format", "json"])
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.stdout)["rows"]
    assert row["method"] == "ghost_method_not_installed" and row.get("verified") is None and row.get("reward_acc") is None
    md = runner.invoke(cli.app, ["leaderboard", "--runs", str(tmp_path / "runs"), "--format", "md"])
    assert md.exit_code == 0 and "ghost_method_not_installed" in md.stdout


def test_leaderboard_bad_format(runs_dir):
    result = runner.invoke(cli.app, ["leaderboard", "--runs", str(runs_dir), "--format", "xml"])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ") and "xml" in result.stderr


def test_run_reuses_a_complete_run_and_prints_its_scores(tiny_dpo_run):
    run, cfg = tiny_dpo_run
    result = runner.invoke(cli.app, ["run", "--method", "dpo", *TINY, "--runs", cfg.runs_dir])
    assert result.exit_code == 0, result.output
    last = result.stdout.strip().splitlines()[-1]
    path, summary = last.split(" ", 1)
    assert Path(path) == run.path
    scores = json.loads(summary)
    assert set(scores) >= {"verified", "reward_accuracy"} and all(0 <= v <= 1 for v in scores.values())


def test_align_reports_a_tokenizer_against_itself(monkeypatch, capsys, tiny_dirs):
    """Two models with one tokenizer: every student token on a shared boundary, one-to-one, and mapped."""
    code, out, err = bench_main(monkeypatch, capsys, "align", "--student", "tiny-random-student", "--teacher",
                                "tiny-random", "--limit", "2", "--format", "json")
    assert code == 0, err
    report = json.loads(out)
    rows = report["rows"]
    assert set(rows) >= {"all/all", "sft/all", "pref_train/all", "pref_val/all"}
    total = rows["all/all"]
    assert total["texts"] == sum(rows[f"{s}/all"]["texts"] for s in ("sft", "pref_train", "pref_val")) > 0
    assert total["on_boundary"] == total["one_to_one"] == total["mapped"] == total["student_tokens"] > 0
    assert report["vocab_coverage"] > 0.99

"""`--set teacher.server=URL`: a run whose DPO teacher is served (`bench serve-teacher`, TRL's protocol) on
loopback: its signal entries come from the server (no local teacher pass), the student trains, and what a server
cannot give stops the run before any work with one error line."""
from __future__ import annotations

import json
import threading

import pytest
from typer.testing import CliRunner

from bench.signals.compute import FORWARD_PASSES
from bench.signals.serve import load_scorer, make_server

pytestmark = [pytest.mark.usefixtures("single_thread_module"), pytest.mark.heavy]


@pytest.fixture(scope="module")
def served(tiny_dirs, tiny_run_config, tmp_path_factory):
    """A server for the tiny pipeline's own DPO teacher."""
    from bench.pipeline.graph import Pipeline

    teacher_dir = Pipeline(tiny_run_config(tmp_path_factory.mktemp("build"))).model_dir("dpo_teacher")
    srv = make_server(load_scorer(str(teacher_dir)), "127.0.0.1", 0)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def bench_run(method: str, url: str, runs) -> object:
    from cli import app

    return CliRunner().invoke(app, ["run", "--method", method, "--student", "tiny-random-student", "--preset", "tiny",
                                    "--runs", str(runs), "--set", f"teacher.server={url}"])


def test_a_run_reads_its_teacher_signals_from_the_server(served, tmp_path):
    passes = sum(FORWARD_PASSES.values())
    result = bench_run("dckd", served, tmp_path)
    assert result.exit_code == 0, result.output
    run = next(tmp_path.glob("dckd-*"))
    manifest = json.loads((run / "manifest.json").read_text())
    signals = [s["cost"] for s in manifest["cost"]["stages"] if s["kind"] == "signals"
               and s["cost"].get("role") == "dpo_teacher"]
    assert len(signals) == 2  # chosen and rejected, both from the server
    assert all(s["server"].startswith("http://127.0.0.1:") and s["forward_passes"] == 0 and s["server_requests"] >= 1
               for s in signals)
    assert sum(FORWARD_PASSES.values()) == passes  # no local teacher pass in this process
    assert json.loads((run / "metrics.json").read_text())["train"]["steps"] == 3


@pytest.mark.parametrize("method,reason", [("tvkd", "raw"), ("seq_kd", "generations"), ("uld", "signals")])
def test_what_a_server_cannot_give_is_one_error_line_before_any_work(served, tmp_path, method, reason, monkeypatch,
                                                                      capsys):
    from cli_kit import TINY, assert_one_line_error, bench_main

    code, _, err = bench_main(monkeypatch, capsys, "run", "--method", method, *TINY, "--runs", str(tmp_path),
                              "--set", f"teacher.server={served}")
    assert_one_line_error(code, err, reason, "teacher.server")
    assert not list(tmp_path.iterdir())


def test_an_unreachable_server_is_one_error_line(tmp_path, monkeypatch, capsys):
    from cli_kit import TINY, assert_one_line_error, bench_main

    code, _, err = bench_main(monkeypatch, capsys, "run", "--method", "dckd", *TINY, "--runs", str(tmp_path),
                              "--set", "teacher.server=http://127.0.0.1:9", "--set", "teacher.retries=0")
    assert_one_line_error(code, err, "unreachable", "http://127.0.0.1:9")
    assert not list(tmp_path.iterdir())

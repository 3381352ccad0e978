"""Helpers for the data-safety tests: `bench` on tiny models, each test on its own cache, with named fault points
(`BENCH_FAULT`, bench/faults.py) that kill the process with SIGKILL. A command with a fault runs as a real `bench`
process (the kill is the point); every other command runs the same entry point (`cli.main`) in this process, with
its own argv, environment, working directory and captured output, which saves the interpreter and torch start-up
of a process per command (a few seconds each; tests/cli_commands/test_cli.py keeps console-script tests)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

BENCH = str(Path(sys.executable).parent / "bench")
TINY = ["--student", "tiny-random-student", "--preset", "tiny"]
KILLED = -signal.SIGKILL


def new_cache(root: Path, shared: Path) -> Path:
    """An empty stage cache whose converted models (tiny models, tokenizer) are shared with the session cache."""
    cache = Path(root)
    cache.mkdir(parents=True)
    (cache / "models").symlink_to(Path(shared) / "models", target_is_directory=True)
    return cache


def bench(args: list[str], cache: Path, *, cwd: Path | None = None, fault: str | None = None,
          timeout: float = 300, env: dict | None = None, process: bool = False) -> subprocess.CompletedProcess:
    """`bench ARGS` on `cache`: a real process with a fault (or `process=True`), else in this process."""
    overrides = {"BENCH_CACHE": str(cache), "BENCH_PROGRESS": "0", "HF_HUB_OFFLINE": "1", **(env or {})}
    if not (fault or process):
        return _in_process(args, overrides, cwd)
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **overrides}
    full_env.pop("BENCH_FAULT", None)
    if fault:
        full_env["BENCH_FAULT"] = fault
    return subprocess.run([BENCH, *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)


def _in_process(args: list[str], overrides: dict, cwd: Path | None) -> subprocess.CompletedProcess:
    import contextlib
    import io
    import traceback

    import cli

    saved_env = {k: os.environ.get(k) for k in [*overrides, "BENCH_FAULT"]}
    saved_argv, saved_cwd = sys.argv, os.getcwd()
    out, err, code = io.StringIO(), io.StringIO(), 0
    try:
        os.environ.update(overrides)
        os.environ.pop("BENCH_FAULT", None)
        sys.argv = ["bench", *args]
        if cwd is not None:
            os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                cli.main()
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            except Exception:  # what a process would print before dying: the tests assert there is none
                traceback.print_exc()
                code = 1
    finally:
        os.chdir(saved_cwd)
        sys.argv = saved_argv
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return subprocess.CompletedProcess(["bench", *args], code, out.getvalue(), err.getvalue())


def weights(model_dir: Path) -> dict[str, torch.Tensor]:
    out = {}
    for f in sorted(Path(model_dir).glob("*.safetensors")):
        out.update(load_file(str(f)))
    return out


def assert_bitwise_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k


def flip_byte(path: Path, offset: int | None = None) -> None:
    """Flip every bit of one byte in place (default: the middle of the file)."""
    data = bytearray(Path(path).read_bytes())
    i = len(data) // 2 if offset is None else offset
    data[i] ^= 0xFF
    Path(path).write_bytes(bytes(data))


def truncate(path: Path, keep: float = 0.5) -> None:
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[: int(len(data) * keep)])


def one_error_line(proc: subprocess.CompletedProcess, *needles: str) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr[-2000:]
    for n in needles:
        assert n in errors[0], (n, errors[0])
    return errors[0]


def run_dirs(runs: Path) -> list[Path]:
    return sorted(p for p in Path(runs).iterdir() if p.is_dir() and not p.name.startswith("."))

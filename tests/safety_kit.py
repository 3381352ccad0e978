"""Helpers for the data-safety tests: real `bench` processes on tiny models, each on its own cache, with named
fault points (`BENCH_FAULT`, bench/faults.py) that kill the process with SIGKILL."""
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
          timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "BENCH_CACHE": str(cache), "OMP_NUM_THREADS": "1", "BENCH_PROGRESS": "0",
                "HF_HUB_OFFLINE": "1", **(env or {})}
    full_env.pop("BENCH_FAULT", None)
    if fault:
        full_env["BENCH_FAULT"] = fault
    return subprocess.run([BENCH, *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)


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

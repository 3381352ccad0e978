"""benchmarks/gpu_check.sh cannot rot: its `--cpu --tiny` mode runs the same code as the GPU check (the shared
trainer's DCKD and DPO steps on a toy Llama) and prints one JSON line."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"


def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=600, env=env)


def test_cpu_tiny_prints_one_json_line_with_every_measure():
    proc = run("--cpu", "--tiny")
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1
    out = json.loads(lines[0])
    assert out["shape"] == "tiny" and out["precision"] == "fp32" and out["parameters"] > 0
    assert out["flops_per_token"] > 6 * out["parameters"]
    assert set(out["methods"]) == {"dckd", "dpo"}
    for name, m in out["methods"].items():
        assert m["tokens_per_s"] > 0 and m["seconds_per_step"] > 0 and m["peak_memory_bytes"] > 0, name
        assert m["loss_finite"] and m["mfu"] is None  # no peak FLOP/s for a CPU
    # the reference log-probs are the policy's own at the start (lr 1e-7 barely moves it): DPO's loss is ln 2, which
    # it is only when the signals line up with the policy's rows
    assert abs(out["methods"]["dpo"]["loss"] - math.log(2)) < 1e-3
    assert "not measured" in out["ddp_vs_fsdp"]


def test_without_a_gpu_the_gpu_mode_is_one_error_line():
    proc = run(env={"CUDA_VISIBLE_DEVICES": ""})
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1 and "--cpu --tiny" in proc.stderr

"""Scale-out on accelerate, proven on CPU: `accelerate launch` (configs/accelerate/cpu_ddp.yaml: 2 processes,
DDP over gloo) of `bench run` for DPO, DCKD and TVKD on the tiny pipeline.

* data parallel = one process with the same global batch: 2 processes × batch 2 end at the weights of 1 process ×
  batch 4 (stated tolerances below), and far from a 1-process run with batch 2;
* the teacher side is not rebuilt, and the signal entries the runs need (deleted first) are rebuilt once, by a
  pass sharded over both processes, byte-identical to the single-process entries;
* both processes exit 0; one summary line; no temp dir or part file is left in the cache.
"""
from __future__ import annotations

import filecmp
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from bench.runs.run import run_pipeline

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "configs" / "accelerate" / "cpu_ddp.yaml"
FSDP_CONFIG = ROOT / "configs" / "accelerate" / "cpu_fsdp.yaml"
METHODS = ("dpo", "dckd", "tvkd")
# Compared: the update Δ = w_final − w_init, as rel = ‖Δ_launch − Δ_one‖ / ‖Δ_one‖. Measured on this tiny setup (3
# AdamW steps, lr 1e-3, the pipeline's own precision): DPO 7.5e-7, DCKD 2.9e-7, TVKD 7.5e-7: float rounding, since
# token means are one mean over the global step (bench.method.StepNorm; every method in float64:
# tests/train/test_global_means.py). Before StepNorm DCKD's token means were averaged per process: 6.7e-2. Another
# global batch (one process × batch 2) gives rel ≈ 1, and so would a launch without gradient sync.
# float noise of a different summation order (2 processes × 2 vs 1 × 4) over the run's Adam steps: up to 4e-4 on the
# earlier CI CPUs, 1.02e-3 for TVKD measured on a Xeon with AVX-512/AMX (its oneDNN kernels); another global batch
# lands > 0.5 away (checked below), so 2e-3 still separates the two by 250x
TOL = {"dpo": 2e-3, "tvkd": 2e-3, "dckd": 2e-3}
SETS = ["select_by=last", "student.train.save_every=0"]

pytestmark = [pytest.mark.usefixtures("single_thread_module"), pytest.mark.heavy]


def update(run_dir: Path, cache: Path) -> torch.Tensor:
    """w_final − w_init (the SFT student the run started from), flattened, float64."""
    init = next(e for e in json.loads((run_dir / "manifest.json").read_text())["cache_entries"]
                if e.startswith("stages/sft_student/"))
    w0 = load_file(str(cache / init / "model.safetensors"))
    w1 = load_file(str(run_dir / "checkpoint" / "model.safetensors"))
    assert w0.keys() == w1.keys()
    return torch.cat([(w1[k].double() - w0[k].double()).flatten() for k in sorted(w0)])


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def launch(args: list[str], cwd: Path, config: Path = CONFIG) -> subprocess.CompletedProcess:
    accelerate = Path(sys.executable).with_name("accelerate")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "BENCH_PROGRESS": "0"}
    return subprocess.run([str(accelerate), "launch", "--config_file", str(config), "-m", "cli", "run", *args],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def ddp_runs(tiny_dirs, tiny_run_config, bench_cache, tmp_path_factory):
    """(single-process runs at batch 4, at batch 2, the launched runs at 2 × 2, saved signal entries, results), on a
    cache of their own (its converted models shared): the fixture deletes signal entries and the test counts the
    teacher-side stages, which other pytest-xdist workers must neither see nor disturb."""
    from safety_kit import new_cache

    base = tmp_path_factory.mktemp("ddp")
    with pytest.MonkeyPatch.context() as mp:
        cache = new_cache(base / "cache", bench_cache)
        mp.setenv("BENCH_CACHE", str(cache))
        return _ddp_runs(base, cache, tiny_run_config)


def _ddp_runs(base: Path, bench_cache: Path, tiny_run_config) -> dict:
    single, small = {}, {}

    def one_process(method: str, batch: int, runs: str) -> Path:
        sets = {"select_by": "last", "student.train.save_every": 0, "student.train.batch_size": batch}
        return run_pipeline(tiny_run_config(base / runs, method=method, stage_overrides=sets)).path

    for m in METHODS:
        single[m] = one_process(m, 4, "single")
    small["dpo"] = one_process("dpo", 2, "small")
    saved = {}
    for m in METHODS:  # the signal entries the runs read: kept aside, then deleted so the launch rebuilds them
        stages = json.loads((single[m] / "manifest.json").read_text())["cost"]["stages"]
        for rel in (e["path"] for e in stages if e["kind"] == "signals" and e["direct"]):  # what the run itself read
            if rel not in saved:
                saved[rel] = base / "saved" / rel.replace("/", "_")
                shutil.copytree(bench_cache / rel, saved[rel])
    for rel in saved:
        shutil.rmtree(bench_cache / rel)
    teacher_side = sorted(p.name for kind in ("ref_teacher", "dpo_teacher", "sft_student")
                          for p in (bench_cache / "stages" / kind).glob("*") if not p.name.startswith("."))
    results = {}
    for m in METHODS:
        args = ["--preset", "tiny", "--method", m, "--student", "tiny-random-student", "--runs", str(base / "ddp")]
        # every stage at batch 2 per process: the global batch of the one-process stages (4), so they are reused
        for s in [*SETS, *(f"{role}.train.batch_size=2" for role in ("ref_teacher", "dpo_teacher", "chosen_teacher",
                                                                       "sft_student", "student"))]:
            args += ["--set", s]
        results[m] = launch(args, ROOT)
        if m == "dckd":  # the same run sharded with FSDP2 (configs/accelerate/cpu_fsdp.yaml)
            fsdp_args = [str(base / "fsdp") if a == str(base / "ddp") else a for a in args]
            results["dckd/fsdp"] = launch(fsdp_args, ROOT, FSDP_CONFIG)
    return {"single": single, "small": small, "saved": saved, "results": results, "teacher_side": teacher_side,
            "base": base, "cache": bench_cache}


@pytest.mark.parametrize("method", METHODS)
def test_launch_matches_one_process_with_the_same_global_batch(ddp_runs, method):
    bench_cache = ddp_runs["cache"]
    proc = ddp_runs["results"][method]
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = [line for line in proc.stdout.splitlines() if line.startswith(str(ddp_runs["base"] / "ddp"))]
    assert len(summary) == 1, proc.stdout  # one summary line: process 0's
    run = Path(summary[0].split(" ", 1)[0])
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["run_preset"]["student"]["train"]["batch_size"] == 2
    one = update(ddp_runs["single"][method], bench_cache)
    r = rel(update(run, bench_cache), one)
    assert r < TOL[method], f"{method}: 2 processes × batch 2 vs 1 × 4: relative update difference {r:.2e}"
    if method == "dpo":  # the tolerance separates: another global batch lands far away
        assert rel(update(ddp_runs["small"]["dpo"], bench_cache), one) > 0.5


def test_fsdp2_launch_matches_one_process_and_writes_a_full_checkpoint(ddp_runs):
    """`bench run` under FSDP2 (2 processes): validation on a gathered copy, the final model written whole by
    process 0 (`update` reads every parameter of it), the update within the bound of the one-process run."""
    proc = ddp_runs["results"]["dckd/fsdp"]
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = [line for line in proc.stdout.splitlines() if line.startswith(str(ddp_runs["base"] / "fsdp"))]
    assert len(summary) == 1, proc.stdout
    run = Path(summary[0].split(" ", 1)[0])
    r = rel(update(run, ddp_runs["cache"]), update(ddp_runs["single"]["dckd"], ddp_runs["cache"]))
    assert r < TOL["dckd"], f"FSDP2 2 × 2 vs 1 × 4: relative update difference {r:.2e}"


def test_teacher_side_built_once_and_signals_sharded_byte_identical(ddp_runs):
    bench_cache = ddp_runs["cache"]
    assert all(p.returncode == 0 for p in ddp_runs["results"].values())
    now = sorted(p.name for kind in ("ref_teacher", "dpo_teacher", "sft_student")
                 for p in (bench_cache / "stages" / kind).glob("*") if not p.name.startswith("."))
    assert now == ddp_runs["teacher_side"]  # nothing retrained under the launcher
    assert ddp_runs["saved"], "the runs read no signal entry"
    for rel, copy in ddp_runs["saved"].items():
        entry = bench_cache / rel
        marker = json.loads((entry / "manifest.json").read_text())
        files = sorted(f.name for f in entry.iterdir())
        assert files == sorted(f.name for f in copy.iterdir())  # no part file left, nothing extra
        for name in files:
            if name != "manifest.json":
                assert filecmp.cmp(entry / name, copy / name, shallow=False), f"{rel}/{name} differs"
        assert marker["files"] == json.loads((copy / "manifest.json").read_text())["files"]
        n = len(marker["kinds"]["logps"]["shards"]) and sum(s["examples"] for s in marker["kinds"]["logps"]["shards"])
        # built once: the two processes' passes add up to one pass over the data, not two
        assert marker["cost"]["forward_passes"] == math.ceil(n / 8)
    rebuilt = {Path(rel).name for rel in ddp_runs["saved"]}
    leftovers = [p for p in (bench_cache / "stages" / "signals").iterdir()
                 if p.name.startswith(".") and p.name[1:].split(".tmp-")[0] in rebuilt]
    assert leftovers == []


@pytest.mark.parametrize("name,engine", [("cpu_ddp", "MULTI_GPU"), ("multi_gpu", "MULTI_GPU"), ("fsdp", "FSDP"),
                                         ("deepspeed_zero3", "DEEPSPEED")])
def test_engine_configs_are_valid_accelerate_configs(name, engine):
    """FSDP and ZeRO-3 are not run here (docs/SCALING.md says why); their configs must at least load as accelerate
    configs of the intended engine, with the settings the docs rely on."""
    from accelerate.commands.config.config_args import load_config_from_file

    cfg = load_config_from_file(str(ROOT / "configs" / "accelerate" / f"{name}.yaml"))
    assert cfg.distributed_type.name == engine
    if engine == "FSDP":
        assert cfg.fsdp_config["fsdp_state_dict_type"] == "FULL_STATE_DICT"  # save_pretrained gets full weights
    if engine == "DEEPSPEED":
        assert cfg.deepspeed_config["zero_stage"] == 3 and cfg.deepspeed_config["zero3_save_16bit_model"]

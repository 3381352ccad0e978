"""Every token mean is one mean over the global step: a run's weights do not depend on how its global batch is
split over processes or gradient-accumulation micro-batches (bench.method.StepNorm, LossBatch.token_mean/mean).

For every registered method and every trained stage, 3 AdamW steps (lr 1e-3, float64, tests/means_kit.py) of
* 2 CPU processes × batch 2 (`accelerate launch`, configs/accelerate/cpu_ddp.yaml, DDP over gloo), and
* 1 process, 2 micro-batches × 2 (gradient accumulation)
end at the update of 1 process × batch 4: ‖Δ − Δ₁ₓ₄‖ / ‖Δ₁ₓ₄‖ ≤ 1e-3. Measured: ≤ 1e-13 for every target (float64
rounding). The controls show that the bound separates: per-micro-batch token means (what the trainer did before
StepNorm) move DCKD's update by 0.21, another global batch moves any update by ~0.5.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

import means_kit as kit
from bench.registry import method_names

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "configs" / "accelerate" / "cpu_ddp.yaml"
FSDP_CONFIG = ROOT / "configs" / "accelerate" / "cpu_fsdp.yaml"
TARGETS = [*method_names(), *(f"stage:{role}" for role in kit.STAGES)]
BOUND = 1e-3

pytestmark = [pytest.mark.usefixtures("single_thread_module"), pytest.mark.heavy]


FSDP_TARGETS = ["sft", "dpo", "dckd", "adpa", "tvkd"]


def run_kit(config: Path, out: Path, targets: list[str], bench_cache: Path, **env) -> subprocess.CompletedProcess:
    out.mkdir(exist_ok=True)
    accelerate = Path(sys.executable).with_name("accelerate")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "BENCH_PROGRESS": "0", "BENCH_CACHE": str(bench_cache),
           "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), str(ROOT), os.environ.get("PYTHONPATH", "")]), **env}
    return subprocess.run([str(accelerate), "launch", "--config_file", str(config), str(ROOT / "tests" / "means_kit.py"),
                           str(out), "2", "1", *targets], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=1200)


def launch(config: Path, out: Path, targets: list[str], bench_cache: Path) -> dict:
    """`accelerate launch` of the kit (2 processes × batch 2): {target: Δ}, and each target's state bytes."""
    proc = run_kit(config, out, targets, bench_cache)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    deltas = {t: load_file(str(out / f"{t.replace(':', '-')}.safetensors")) for t in targets}
    return {"deltas": deltas, "state_bytes": json.loads((out / "state_bytes.json").read_text())}


@pytest.fixture(scope="module")
def matrix(tiny_dirs, bench_cache, tmp_path_factory):
    """{target: (Δ 1×4, Δ 1×(2+2) accumulated, Δ 2 processes × 2)}; the one-process runs first build any stage the
    targets need, so the launched processes only read the cache."""
    base = tmp_path_factory.mktemp("means")
    one = {t: (kit.update(t, 4, 1, base), kit.update(t, 2, 2, base)) for t in TARGETS}
    ddp = launch(CONFIG, base / "ddp", TARGETS, bench_cache)
    fsdp = launch(FSDP_CONFIG, base / "fsdp", FSDP_TARGETS, bench_cache)
    return {"targets": {t: (*one[t], ddp["deltas"][t]) for t in TARGETS}, "fsdp": fsdp, "ddp": ddp}


def test_every_method_and_stage_is_covered():
    assert len(method_names()) == 22 and len(TARGETS) == 27


@pytest.mark.parametrize("target", TARGETS)
def test_two_processes_and_accumulation_equal_one_batch(matrix, target):
    full, accumulated, launched = matrix["targets"][target]
    assert kit.flat(full).norm() > 0, f"{target}: the reference run did not move"
    r_ddp, r_acc = kit.rel(launched, full), kit.rel(accumulated, full)
    assert r_ddp <= BOUND, f"{target}: 2 processes × 2 vs 1 × 4: relative update difference {r_ddp:.2e}"
    assert r_acc <= BOUND, f"{target}: 2 micro-batches × 2 vs one batch of 4: relative update difference {r_acc:.2e}"


@pytest.mark.parametrize("target", FSDP_TARGETS)
def test_fsdp2_two_processes_equal_one_batch(matrix, target):
    full = matrix["targets"][target][0]
    r = kit.rel(matrix["fsdp"]["deltas"][target], full)
    assert r <= BOUND, f"{target}: FSDP2, 2 processes × 2 vs 1 × 4: relative update difference {r:.2e}"


def test_fsdp2_holds_half_the_parameter_and_optimizer_bytes_of_ddp(matrix):
    for target in FSDP_TARGETS:
        ratio = matrix["fsdp"]["state_bytes"][target] / matrix["ddp"]["state_bytes"][target]
        assert 0.45 <= ratio <= 0.55, f"{target}: FSDP2 / DDP bytes per process {ratio:.3f}"


def test_fsdp2_resumes_from_a_full_state_written_by_process_0(matrix, bench_cache, tmp_path):
    """Killed after its second state (3 steps, a state per step), the FSDP2 run resumes from it and ends where the
    uninterrupted one did; the state on disk is whole (full safetensors of every weight, written once)."""
    out = tmp_path / "resume"
    killed = run_kit(FSDP_CONFIG, out, ["dckd"], bench_cache, KIT_SAVE_EVERY="1", BENCH_FAULT="state-save:2")
    assert killed.returncode != 0
    states = sorted((out / "work-dckd-2x1").glob("state-*"), reverse=True)  # killed before the older one went
    assert states and states[0].name == "state-00000002"
    from safetensors.torch import load_file as load

    weights = {k for f in (states[0] / "model").glob("*.safetensors") for k in load(str(f))}
    assert weights >= {k for k in matrix["targets"]["dckd"][0] if "lm_head" not in k}  # not a shard
    resumed = run_kit(FSDP_CONFIG, out, ["dckd"], bench_cache, KIT_SAVE_EVERY="1", KIT_RESUME="1")
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "resuming at step 2/3" in resumed.stdout + resumed.stderr
    r = kit.rel(load(str(out / "dckd.safetensors")), matrix["fsdp"]["deltas"]["dckd"])
    assert r <= 1e-9, f"resumed vs uninterrupted FSDP2 run: relative update difference {r:.2e}"


def test_the_bound_separates(tiny_dirs, tmp_path, monkeypatch):
    """Per-micro-batch token means (no StepNorm) and another global batch both land far outside the bound."""
    from bench.train.parallel import Parallel

    full = kit.update("dckd", 4, 1, tmp_path)
    assert kit.rel(kit.update("dckd", 2, 1, tmp_path), full) > 0.1  # another global batch
    monkeypatch.setattr(Parallel, "step_norm", lambda self, *a, **k: None)
    assert kit.rel(kit.update("dckd", 2, 2, tmp_path), full) > 100 * BOUND

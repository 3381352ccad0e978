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

from pathlib import Path

import pytest

import means_kit as kit
from bench.registry import method_names

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "configs" / "accelerate" / "cpu_ddp.yaml"
TARGETS = [*method_names(), *(f"stage:{role}" for role in kit.STAGES)]
BOUND = 1e-3

pytestmark = [pytest.mark.usefixtures("single_thread_module"), pytest.mark.heavy]


@pytest.fixture(scope="module")
def matrix(tiny_dirs, bench_cache, tmp_path_factory):
    """{target: (Δ 1×4, Δ 1×(2+2) accumulated, Δ 2 processes × 2)}; the one-process runs first build any stage the
    targets need, so the launched processes only read the cache."""
    base = tmp_path_factory.mktemp("means")
    one = {t: (kit.update(t, 4, 1, base), kit.update(t, 2, 2, base)) for t in TARGETS}
    ddp = kit.launch(CONFIG, base / "ddp", TARGETS, bench_cache)
    return {t: (*one[t], ddp["deltas"][t]) for t in TARGETS}


def test_every_method_and_stage_is_covered():
    assert len(method_names()) == 23 and len(TARGETS) == 28


def test_two_processes_and_accumulation_equal_one_batch(matrix):
    """Every target at once (one test: under xdist's worksteal, parametrized tests of a module can land on two
    workers, and each would build this fixture)."""
    bad = []
    for target in TARGETS:
        full, accumulated, launched = matrix[target]
        assert kit.flat(full).norm() > 0, f"{target}: the reference run did not move"
        r_ddp, r_acc = kit.rel(launched, full), kit.rel(accumulated, full)
        if r_ddp > BOUND or r_acc > BOUND:
            bad.append(f"{target}: 2 processes {r_ddp:.2e}, 2 micro-batches {r_acc:.2e}")
    assert not bad, "relative update differences against one batch of 4: " + "; ".join(bad)


def test_the_bound_separates(tiny_dirs, tmp_path, monkeypatch):
    """Per-micro-batch token means (no StepNorm) and another global batch both land far outside the bound."""
    from bench.train.parallel import Parallel

    full = kit.update("dckd", 4, 1, tmp_path)
    assert kit.rel(kit.update("dckd", 2, 1, tmp_path), full) > 0.1  # another global batch
    monkeypatch.setattr(Parallel, "step_norm", lambda self, *a, **k: None)
    assert kit.rel(kit.update("dckd", 2, 2, tmp_path), full) > 100 * BOUND

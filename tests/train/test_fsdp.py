"""FSDP2 (`accelerate launch --config_file configs/accelerate/cpu_fsdp.yaml`, gloo): 2 processes × batch 2 end at
the update of 1 process × batch 4 for SFT, DPO, DCKD, ADPA and TVKD (float64, 3 AdamW steps, tests/means_kit.py;
measured ≤ 3e-14, bound 1e-3); each process holds half the parameter and optimizer bytes of an unsharded one
(measured 0.500); a run killed after its second resumable state resumes from the full state process 0 wrote and
ends at the uninterrupted run's weights."""
from __future__ import annotations

from pathlib import Path

import pytest

import means_kit as kit

ROOT = Path(__file__).resolve().parents[2]
FSDP_CONFIG = ROOT / "configs" / "accelerate" / "cpu_fsdp.yaml"
FSDP_TARGETS = ["sft", "dpo", "dckd", "adpa", "tvkd"]
BOUND = 1e-3

pytestmark = [pytest.mark.usefixtures("single_thread_module"), pytest.mark.heavy]


@pytest.fixture(scope="module")
def sharded(tiny_dirs, bench_cache, tmp_path_factory):
    """(one-process Δ and state bytes per target, the FSDP2 launch's Δ and process 0's state bytes)."""
    base = tmp_path_factory.mktemp("fsdp")
    one, one_bytes = {}, {}
    for t in FSDP_TARGETS:  # an unsharded process holds what each DDP process holds: everything
        one[t] = kit.update(t, 4, 1, base)
        one_bytes[t] = kit.STATE_BYTES[t]
    return one, one_bytes, kit.launch(FSDP_CONFIG, base / "launch", FSDP_TARGETS, bench_cache)


def test_fsdp2_equals_one_batch_halves_the_state_and_resumes(sharded, bench_cache, tmp_path):
    """One test for everything (a module fixture is built once per xdist worker that runs a test of it)."""
    one, one_bytes, fsdp = sharded
    bad = [f"{t}: {kit.rel(fsdp['deltas'][t], one[t]):.2e}" for t in FSDP_TARGETS
           if kit.rel(fsdp["deltas"][t], one[t]) > BOUND]
    assert not bad, "FSDP2 2 × 2 vs 1 × 4, relative update difference: " + "; ".join(bad)
    ratios = {t: fsdp["state_bytes"][t] / one_bytes[t] for t in FSDP_TARGETS}
    assert all(0.45 <= r <= 0.55 for r in ratios.values()), ratios
    check_resume(sharded, bench_cache, tmp_path)


def check_resume(sharded, bench_cache, tmp_path):
    """Killed after its second state (3 steps, a state per step), the FSDP2 run resumes from it and ends where the
    uninterrupted one did; the state on disk is whole (every weight, not a shard)."""
    from safetensors.torch import load_file

    out = tmp_path / "resume"
    killed = kit.run_kit(FSDP_CONFIG, out, ["dckd"], bench_cache, KIT_SAVE_EVERY="1", BENCH_FAULT="state-save:2")
    assert killed.returncode != 0
    states = sorted((out / "work-dckd-2x1").glob("state-*"), reverse=True)  # killed before the older one went
    assert states and states[0].name == "state-00000002"
    weights = {k for f in (states[0] / "model").glob("*.safetensors") for k in load_file(str(f))}
    assert weights >= {k for k in sharded[0]["dckd"] if "lm_head" not in k}  # not a shard
    resumed = kit.run_kit(FSDP_CONFIG, out, ["dckd"], bench_cache, KIT_SAVE_EVERY="1", KIT_RESUME="1")
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "resuming at step 2/3" in resumed.stdout + resumed.stderr
    r = kit.rel(load_file(str(out / "dckd.safetensors")), sharded[2]["deltas"]["dckd"])
    assert r <= 1e-9, f"resumed vs uninterrupted FSDP2 run: relative update difference {r:.2e}"

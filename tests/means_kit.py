"""The global-means matrix (tests/train/test_global_means.py): a few AdamW steps of one method or training stage
on the tiny pipeline, through the shared trainer, returning the weight update Δ = w_final − w_init.

Run in-process (one process) or as a script under `accelerate launch` (every process trains its share; process 0
writes each update to OUT/<target>.safetensors):

    accelerate launch --config_file configs/accelerate/cpu_ddp.yaml tests/means_kit.py OUT BATCH ACCUM TARGET...

A target is a method name (the run's student stage) or `stage:<role>` (ref_teacher, sft_student, dpo_teacher,
rdpo_teacher, chosen_teacher). Models train in float64, so that float32 rounding (which AdamW turns into lr-sized
steps on coordinates whose gradient is near zero) cannot hide or fake a normalisation difference.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import torch

STEPS, LR = 3, 1e-3
ROOT = Path(__file__).resolve().parents[1]
STAGES = ("ref_teacher", "sft_student", "dpo_teacher", "rdpo_teacher", "chosen_teacher")
PRESET_ROLES = ("ref_teacher", "dpo_teacher", "chosen_teacher", "sft_student", "student")  # configs/runs/tiny.yaml
TINY_BATCH = 4


def update(target: str, batch: int, accum: int, runs_dir: Path, steps: int = STEPS) -> dict[str, torch.Tensor]:
    from bench import dist
    from bench.train.trainer import TrainConfig, train

    stage = target[len("stage:"):] if target.startswith("stage:") else None
    pipe = _pipeline(runs_dir, "dpo" if stage else target)
    if stage:
        method, mcfg, data, init = pipe.stage_inputs(stage)
        pad_id, ref = pipe.enc_for(stage).tokenizer.pad_token_id, None
    else:
        method, mcfg, data, init = pipe.student_inputs()
        pad_id = pipe.tok.pad_token_id
        ref = pipe.load("sft_student").double() if method.reference(mcfg) == "online" else None
    model = pipe.load(init).double()
    w0 = {k: p.detach().clone() for k, p in model.named_parameters()}
    # KIT_SAVE_EVERY / KIT_RESUME (environment): resumable states every N steps, resume from the newest one
    tcfg = TrainConfig(lr=LR, batch_size=batch, grad_accum=accum, max_steps=steps, warmup_ratio=0.0,
                       precision="fp32", seed=0, save_every=int(os.environ.get("KIT_SAVE_EVERY", "0")))
    work = runs_dir / f"work-{target.replace(':', '-')}-{batch}x{accum}"  # the same for every process
    result = train(model, method, mcfg, data, tcfg, pad_id=pad_id, work_dir=work, ref_model=ref, desc=target,
                   resume=os.environ.get("KIT_RESUME") == "1")
    STATE_BYTES[target] = result.state_bytes
    if dist.is_main():
        shutil.rmtree(work)
    dist.barrier()
    # under FSDP the trained parameters are DTensor shards: gather each (every process, in the same order)
    return {k: ((p.full_tensor() if hasattr(p, "full_tensor") else p).detach() - w0[k]).flatten()
            for k, p in model.named_parameters()}


_PIPES: dict = {}
STATE_BYTES: dict[str, int] = {}  # target -> this process's parameter + optimizer bytes after its last update()


def _pipeline(runs_dir: Path, method: str):
    """The tiny pipeline with `method` as the run's method: built once per process (tokenizers, data), then only
    its method changes (what Pipeline.__init__ reads of the method is the cross-tokenizer check, moot here)."""
    from bench import dist
    from bench.config import RunConfig
    from bench.pipeline.graph import Pipeline

    key = (str(runs_dir), dist.world())
    if key not in _PIPES:
        # the stages every target starts from keep the identities of the one-process cache: their per-process
        # batch is the tiny preset's (4) over the processes, so N processes find the stages one process built
        keep = {f"{role}.train.batch_size": TINY_BATCH // dist.world() for role in PRESET_ROLES}
        _PIPES[key] = Pipeline(RunConfig(method=method, student="tiny-random-student", preset="tiny",
                                         runs_dir=str(runs_dir), stage_overrides=keep))
    pipe = _PIPES[key]
    pipe.cfg = dataclasses.replace(pipe.cfg, method=method, method_settings={})
    pipe.tau = float(pipe.preset.get("tau", 2.0))
    return pipe


def flat(delta: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.cat([delta[k].double().flatten() for k in sorted(delta)])


def rel(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """‖Δa − Δb‖ / ‖Δb‖ over every parameter."""
    x, y = flat(a), flat(b)
    return float((x - y).norm() / y.norm())


def run_kit(config: Path, out: Path, targets: list[str], bench_cache: Path, **env) -> subprocess.CompletedProcess:
    """`accelerate launch --config_file CONFIG` of this kit (2 processes × batch 2) over `targets`."""
    out.mkdir(exist_ok=True)
    accelerate = Path(sys.executable).with_name("accelerate")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "BENCH_PROGRESS": "0", "BENCH_CACHE": str(bench_cache),
           "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), str(ROOT), os.environ.get("PYTHONPATH", "")]), **env}
    return subprocess.run([str(accelerate), "launch", "--config_file", str(config), str(Path(__file__).resolve()),
                           str(out), "2", "1", *targets], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=1200)


def launch(config: Path, out: Path, targets: list[str], bench_cache: Path) -> dict:
    """{"deltas": {target: Δ}, "state_bytes": {target: process 0's parameter + optimizer bytes}} of a launch."""
    from safetensors.torch import load_file

    proc = run_kit(config, out, targets, bench_cache)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    deltas = {t: load_file(str(out / f"{t.replace(':', '-')}.safetensors")) for t in targets}
    return {"deltas": deltas, "state_bytes": json.loads((out / "state_bytes.json").read_text())}


def main(argv: list[str]) -> None:
    from safetensors.torch import save_file

    from bench import dist

    out, batch, accum, targets = Path(argv[0]), int(argv[1]), int(argv[2]), argv[3:]
    for target in targets:
        delta = update(target, batch, accum, out)
        if dist.is_main():
            name = f"{target.replace(':', '-')}.safetensors"
            save_file({k: v.contiguous() for k, v in delta.items()}, str(out / name))
    if dist.is_main():
        (out / "state_bytes.json").write_text(json.dumps(STATE_BYTES))
    dist.barrier()


if __name__ == "__main__":
    main(sys.argv[1:])

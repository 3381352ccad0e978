"""The process group when `bench` runs under `accelerate launch` (one process per GPU, or per CPU worker with gloo).

Everything here is a no-op in a single process (accelerate is not even imported then). Under several processes:
* `is_main()` is process 0: the only one that takes file locks, writes cache entries, run directories, manifests,
  metrics and leaderboard files, and prints progress;
* `broadcast` sends process 0's decision (a JSON-able value) to every process, `barrier` waits for all of them;
* cached stages are built *collectively* (bench/store/stages.py): every process trains (data parallel) or computes its
  slice of a forward-only pass (sharded), process 0 publishes the entry.

On a machine without GPUs, launch with `accelerate launch --multi_gpu --num_processes N -m cli run ...` (accelerate's
torchrun launcher; `--cpu` alone starts one process): the harness then runs DDP over gloo on CPU.
"""
from __future__ import annotations

import json
import os
from contextlib import contextmanager
from functools import lru_cache

_SOLO = [0]  # > 0 inside `solo()`


@contextmanager
def solo():
    """Work process 0 does on its own while the others wait (test generation, evaluators): inside, this process
    behaves as a single one (stages are built under their locks, not collectively)."""
    _SOLO[0] += 1
    try:
        yield
    finally:
        _SOLO[0] -= 1


def world() -> int:
    if _SOLO[0]:
        return 1
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def cpu_launch_note() -> str | None:
    """The `note:` a run prints when `accelerate launch --cpu` started it alone: accelerate's CPU flag starts ONE
    process whatever `--num_processes` says, and leaves only ACCELERATE_USE_CPU behind (no trace of the asked
    count), so the run would train alone with its per-process batch as the global batch. None otherwise."""
    if os.environ.get("ACCELERATE_USE_CPU", "").strip().lower() not in ("1", "true", "yes") or world() > 1:
        return None
    return ("note: accelerate launch --cpu starts one process whatever --num_processes says; for N CPU processes use "
            "`accelerate launch --config_file configs/accelerate/cpu_ddp.yaml --num_processes N -m cli run ...`")


_ENGINES = {"ACCELERATE_USE_FSDP": ("FSDP", "configs/accelerate/fsdp.yaml"),
            "ACCELERATE_USE_DEEPSPEED": ("DeepSpeed (ZeRO)", "configs/accelerate/deepspeed_zero3.yaml")}


def check_engine() -> None:
    """One error line when `accelerate launch` was asked for a sharding engine (FSDP, DeepSpeed ZeRO): the shared
    trainer wraps the model in data parallelism itself and does not shard it yet, so such a run would train
    unsharded, silently, with the memory of DDP (docs/SCALING.md). Never a silent fallback."""
    from bench.errors import BenchError

    for var, (engine, config) in _ENGINES.items():
        if os.environ.get(var, "").strip().lower() in ("1", "true", "yes"):
            raise BenchError(f"the accelerate config asks for {engine} ({var}=true, e.g. {config}), which this trainer "
                             "does not engage yet: it would train unsharded as DDP; launch with "
                             "configs/accelerate/multi_gpu.yaml (GPUs) or configs/accelerate/cpu_ddp.yaml (CPU) instead")


@lru_cache(maxsize=1)
def state():
    """accelerate's PartialState, created once; on CPU it selects gloo (MULTI_CPU) instead of looking for GPUs."""
    import torch
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


def rank() -> int:
    return state().process_index if world() > 1 else 0


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if world() > 1:
        state().wait_for_everyone()


def broadcast(value):
    """Process 0's `value` on every process (JSON-able values only; sent as a JSON string)."""
    if world() == 1:
        return value
    from accelerate.utils import broadcast_object_list

    box = [json.dumps(value) if is_main() else None]
    broadcast_object_list(box, from_process=0)
    return json.loads(box[0])


def shard(n: int) -> tuple[int, int]:
    """[start, stop) of this process's contiguous slice of n items (process order = item order)."""
    w, r = world(), rank()
    return n * r // w, n * (r + 1) // w

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


def fsdp_requested() -> bool:
    """`accelerate launch` with an FSDP config (ACCELERATE_USE_FSDP=true): the trainer shards with FSDP2."""
    return os.environ.get("ACCELERATE_USE_FSDP", "").strip().lower() in ("1", "true", "yes")


def check_engine() -> None:
    """One error line when `accelerate launch` asks for an engine the trainer does not engage, never a silent
    fallback: DeepSpeed ZeRO (not installed or tested here), FSDP version 1 (the trainer shards with FSDP2's
    `fully_shard`: `fsdp_version: 2`, configs/accelerate/fsdp.yaml), FSDP in one process (nothing to shard over)."""
    from bench.errors import BenchError

    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "").strip().lower() in ("1", "true", "yes"):
        raise BenchError("the accelerate config asks for DeepSpeed (ZeRO; ACCELERATE_USE_DEEPSPEED=true), which this "
                         "trainer does not engage: it would train unsharded as DDP; shard with FSDP2 instead "
                         "(configs/accelerate/fsdp.yaml) or use configs/accelerate/multi_gpu.yaml / cpu_ddp.yaml")
    if fsdp_requested():
        version = os.environ.get("FSDP_VERSION", "1").strip()
        if version != "2":
            raise BenchError(f"the accelerate config asks for FSDP version {version}; the trainer shards with FSDP2 "
                             "(fully_shard): set fsdp_config.fsdp_version: 2 (configs/accelerate/fsdp.yaml)")
        if int(os.environ.get("WORLD_SIZE", "1") or 1) < 2:  # the launch's count (solo() work is not a launch)
            raise BenchError("the accelerate config asks for FSDP but started one process (nothing to shard over); "
                             "launch with --num_processes 2 or more")


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

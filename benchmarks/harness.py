"""Shared pieces of the benchmarks: our training step as the trainer runs it, interleaved timing, the largest
tensor footprint of a step (torch's profiler, no wall clock), peak RSS in a fresh subprocess, and the load.

Timing rules (the machine may be shared): every compared step runs in ONE process, interleaved round-robin, after a
warm-up, and the median of each is reported with the ratio; peak RSS is a process-lifetime maximum, so each
configuration gets its own process (`child_rss`). The load average is printed with every table.
"""
from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.modeling.precision import autocast, set_grad_ckpt  # noqa: E402
from bench.train.trainer import TrainConfig, TrainData, collate, loss_batch, make_optimizer  # noqa: E402
from bench.train.heap import release_heap  # noqa: E402


def set_threads(n: int | None) -> int:
    """torch's intra-op threads (0/None: leave torch's default). On a shared machine 1 thread is the stable
    choice: a busy core stalls every OpenMP barrier of a 2-thread kernel."""
    if n:
        torch.set_num_threads(n)
    return torch.get_num_threads()


def load_avg() -> str:
    a, b, c = os.getloadavg()
    return f"load average {a:.2f} {b:.2f} {c:.2f} on {os.cpu_count()} CPUs"


class OurStep:
    """One optimizer step of `bench.train.trainer.train` on fixed example indices: collate (cached signals read from
    the cache), the body under the precision's autocast, the loss on the chunked head, backward, clip 1.0, AdamW."""

    def __init__(self, model, method, mcfg, data: TrainData, idx: list[int], pad_id: int, precision: str = "fp32",
                 grad_ckpt: str = "off", ref_model=None, chunked: bool = True, optimizer: bool = True):
        self.model, self.method, self.mcfg, self.data, self.idx = model, method, mcfg, data, idx
        self.pad_id, self.precision, self.grad_ckpt, self.ref = pad_id, precision, grad_ckpt, ref_model
        self.chunked = chunked
        self.opt = make_optimizer(model, TrainConfig(lr=1e-7)) if optimizer else None
        batches, _ = collate(data, idx, pad_id)
        self.tokens = sum(b.n_tokens for b in batches.values())
        self.last_loss = float("nan")

    def forward_backward(self, backward: bool = True) -> float:
        """Collate, forward and (unless backward=False) backward, gradients left in .grad."""
        set_grad_ckpt(self.model, self.grad_ckpt)
        self.model.train()
        batches, signals = collate(self.data, self.idx, self.pad_id)
        seq_len = max(b.input_ids.shape[1] for b in batches.values())
        with autocast(self.precision, seq_len=seq_len, weight_cache=self.grad_ckpt == "off"):
            lb = loss_batch(self.model, self.ref, batches, signals, next(self.model.parameters()).device,
                            chunked=self.chunked)
            loss, _ = self.method.loss(lb, self.mcfg)
            if backward:
                loss.backward()
        self.last_loss = float(loss.detach())
        return self.last_loss

    def update(self) -> None:
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        if self.opt is not None:
            self.opt.step()
            self.opt.zero_grad(set_to_none=True)
        else:
            self.model.zero_grad(set_to_none=True)
        release_heap()  # as the trainer does after every optimizer step

    def __call__(self) -> float:
        loss = self.forward_backward()
        self.update()
        return loss

    def peaks(self) -> tuple[int, int]:
        """(tensor peak of forward + backward: activations, head chunks and gradients, optimizer excluded;
        tensor peak of the forward alone: what the graph holds for the backward), after a full step."""
        self()
        step = tensor_peak_bytes(self.forward_backward)
        self.update()
        return step, tensor_peak_bytes(lambda: self.forward_backward(backward=False))


def interleaved(steps: dict[str, Callable[[], object]], repeats: int, warmup: int = 1,
                log: Callable[[str], None] | None = None) -> dict[str, list[float]]:
    """Run every step `warmup` times, then `repeats` rounds of each (order rotated every round); seconds per run."""
    names = list(steps)
    for _ in range(warmup):
        for n in names:
            steps[n]()
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        order = names[r % len(names):] + names[:r % len(names)]
        for n in order:
            t0 = time.perf_counter()
            steps[n]()
            times[n].append(time.perf_counter() - t0)
        if log:
            log(f"  round {r + 1}/{repeats}: " + ", ".join(f"{n} {times[n][-1]:.2f}s" for n in names))
    return times


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def tensor_peak_bytes(fn: Callable[[], object]) -> int:
    """Peak of the bytes held by tensors allocated inside `fn` (alloc/free events of torch's profiler, in order),
    above what was live before: activations, logits, gradients, optimizer state created in the step."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    events.sort(key=lambda e: e.start_ns())
    live = peak = 0
    for e in events:
        live += e.nbytes()
        peak = max(peak, live)
    return peak


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def current_rss_bytes() -> int:
    """Resident memory now (Linux /proc; 0 elsewhere): after a step, what the process keeps between steps (weights,
    optimizer state, the allocator's retained heap, the runtime), as opposed to the step's transient peak."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def child_rss(script: Path, args: list[str], timeout: float = 3600) -> dict:
    """Run `python script args` (which prints one JSON line last) in a fresh process; its parsed result."""
    env = {**os.environ, "BENCH_PROGRESS": "0", "TOKENIZERS_PARALLELISM": "false"}
    out = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, timeout=timeout,
                         env=env, cwd=str(ROOT))
    lines = [ln for ln in out.stdout.strip().splitlines() if ln.startswith("{")]
    if out.returncode != 0 or not lines:
        raise RuntimeError(f"{script.name} {' '.join(args)} failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return json.loads(lines[-1])


def gb(x: float) -> str:
    return f"{x / 1e9:.2f} GB"


def add_pipeline_options(ap) -> None:
    """The options of the benchmarks that read a pipeline's stages: --preset, --set key=value, --json FILE."""
    ap.add_argument("--preset", default="embedded")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--json", help="also write the numbers to this file")


def pipeline_from(args, **fields):
    """The `Pipeline` of `--preset` with `--set` overrides (and any other RunConfig fields)."""
    from bench.config import RunConfig, split_sets
    from bench.pipeline.graph import Pipeline

    _, overrides = split_sets(args.sets, set())
    return Pipeline(RunConfig(**{"method": "dpo", "preset": args.preset, "stage_overrides": overrides, **fields}))


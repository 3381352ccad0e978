"""Data-parallel training under `accelerate launch` (DDP: gloo on CPU, NCCL on GPU), for `bench.train.trainer`.

The losses apply the LM head themselves, chunk by chunk (`bench.head`), so the trainer never calls the causal
LM's own forward. A data-parallel wrapper must still see a forward to sync gradients, so under several processes
the wrapper is put around `BodyRunner`: a module whose forward is the model's body (hidden states). The LM head
weight is used by the loss in the same backward, so its gradient is synced too (tied or not). In one process
nothing is wrapped and every helper here is the identity.

Rules for every process: the same batches of one global order (the trainer's indexing), the same number of
collectives in the same order. Process 0 alone writes (checkpoints, states, the final model); `on_main` runs such
work there and hands its JSON-able result to every process.
"""
from __future__ import annotations

from typing import Callable

import torch

from bench import dist
from bench.method import LossBatch, StepNorm


class BodyRunner(torch.nn.Module):
    """forward(input_ids, attention_mask) -> last hidden state of `lm`'s transformer body."""

    def __init__(self, lm):
        super().__init__()
        self.lm = lm

    def forward(self, input_ids, attention_mask):
        body = getattr(self.lm, self.lm.base_model_prefix)
        return body(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state


class Parallel:
    def __init__(self, accel):
        self.accel = accel
        self.n = accel.num_processes
        self.runner = None  # the wrapped BodyRunner under several processes

    def prepare(self, model, opt):
        """(model, module to run accumulate/clip on, optimizer). The returned model is always the plain LM."""
        if self.n == 1:
            model, opt = self.accel.prepare(model, opt)
            return model, model, opt
        self.runner, opt = self.accel.prepare(BodyRunner(model), opt)
        return model, self.runner, opt

    def all_finite(self, loss: torch.Tensor) -> bool:
        ok = torch.isfinite(loss.detach()).all()
        if self.n == 1:
            return bool(ok)
        flag = torch.tensor([0.0 if ok else 1.0], device=self.accel.device)
        return float(self.accel.reduce(flag, "sum").item()) == 0.0

    def mean_logs(self, n_tokens: int, values: dict) -> tuple[int, dict[str, float]]:
        """(tokens of the global batch, each logged value averaged over processes)."""
        names = list(values)
        local = [float(v.detach().float().item()) if torch.is_tensor(v) else float(v) for v in values.values()]
        if self.n == 1:
            return n_tokens, dict(zip(names, local))
        t = torch.tensor([float(n_tokens), *local], dtype=torch.float64, device=self.accel.device)
        t = self.accel.reduce(t, "sum")
        return int(t[0].item()), {k: float(v) / self.n for k, v in zip(names, t[1:].tolist())}

    def step_norm(self, method, mcfg, micro_batches: list) -> StepNorm:
        """The global counts of one optimizer step (bench.method.StepNorm) from this process's micro-batches
        [(side batches, signals)]: response tokens per side and examples, summed over processes; the method's
        step statistics, concatenated (process 0's micro-batches first)."""
        counts: dict[str, float] = {}
        stats: dict[str, list[torch.Tensor]] = {}
        for batches, signals in micro_batches:
            for side, b in batches.items():
                counts[f"tokens:{side}"] = counts.get(f"tokens:{side}", 0.0) + float(len(b.labels))
            counts["examples"] = counts.get("examples", 0.0) + float(next(iter(batches.values())).n_seq)
            lengths = {side: torch.bincount(b.row_b, minlength=b.n_seq) for side, b in batches.items()}
            for name, t in method.step_stats(mcfg, LossBatch(policy={}, signals=signals), lengths).items():
                stats.setdefault(name, []).append(t.detach().reshape(-1).cpu())
        local = {name: torch.cat(ts) for name, ts in stats.items()}
        scale = float(self.n * len(micro_batches))
        if self.n == 1:
            return StepNorm(scale, counts, local)
        names = sorted(counts)
        t = torch.tensor([counts[k] for k in names], dtype=torch.float64, device=self.accel.device)
        counts = dict(zip(names, self.accel.reduce(t, "sum").tolist()))
        from accelerate.utils import gather_object

        gathered = gather_object([local])  # one dict per process, in process order
        return StepNorm(scale, counts, {name: torch.cat([d[name] for d in gathered]) for name in sorted(local)})

    def on_main(self, work: Callable, share: bool = True):
        """work() on process 0; its (JSON-able) result on every process (None with share=False), after it
        finished."""
        if self.n == 1:
            return work()
        if share:
            return dist.broadcast(work() if dist.is_main() else None)
        if dist.is_main():
            work()
        dist.barrier()
        return None

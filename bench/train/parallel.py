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


def decoder_layers(lm) -> list[torch.nn.Module]:
    """The transformer blocks of a causal LM (HF: `<body>.layers`, GPT-2 style: `<body>.h`)."""
    body = getattr(lm, lm.base_model_prefix)
    return list(getattr(body, "layers", None) or getattr(body, "h", None) or [])


class Parallel:
    def __init__(self, accel):
        self.accel = accel
        self.n = accel.num_processes
        self.runner = None  # the wrapped BodyRunner under several processes
        self.fsdp = self.n > 1 and dist.fsdp_requested()
        self.lm = None

    def prepare(self, model, make_optimizer: Callable):
        """(model, module to run accumulate/clip on, optimizer): DDP around the body under several processes, or
        FSDP2 (`fully_shard` of every decoder layer and of the body runner, which then owns the embeddings, the final
        norm and the LM head) when the launch asks for FSDP. The returned model is always the plain LM."""
        self.lm = model
        if self.n == 1:
            model, opt = self.accel.prepare(model, make_optimizer(model))
            return model, model, opt
        if self.fsdp:
            from torch.distributed.device_mesh import init_device_mesh
            from torch.distributed.fsdp import fully_shard

            mesh = init_device_mesh(self.accel.device.type, (self.n,))
            for layer in decoder_layers(model):
                fully_shard(layer, mesh=mesh)
            # the LM head is applied by the losses after the body's forward: the root's parameters stay gathered
            # from the forward to the end of the backward, where FSDP reduce-scatters their gradients
            self.runner = fully_shard(BodyRunner(model), mesh=mesh, reshard_after_forward=False)
            return model, self.runner, self.accel.prepare(make_optimizer(model))
        self.runner, opt = self.accel.prepare(BodyRunner(model), make_optimizer(model))
        return model, self.runner, opt

    @staticmethod
    def state_bytes(model, opt) -> int:
        """Bytes this process holds of the parameters and the optimizer's state (a DTensor counts its local shard):
        what FSDP divides by the number of processes."""
        def local(t):
            t = t.to_local() if hasattr(t, "to_local") else t
            return t.numel() * t.element_size()
        params = sum(local(p) for p in {id(p): p for p in model.parameters()}.values())
        states = sum(local(v) for st in opt.state.values() for v in st.values() if torch.is_tensor(v) and v.dim() > 0)
        return params + states

    def full_state(self) -> dict | None:
        """The full (unsharded) model state dict on CPU, on every process (a collective); None without FSDP."""
        if not self.fsdp:
            return None
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        sd = get_model_state_dict(self.runner, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        return {k[len("lm."):] if k.startswith("lm.") else k: v for k, v in sd.items()}

    def full_states(self, opt) -> tuple[dict, dict] | None:
        """(model, optimizer) state dicts gathered whole on CPU on every process (a collective) under FSDP, for a
        resumable state that process 0 writes; None without FSDP (the local ones are whole)."""
        if not self.fsdp:
            return None
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

        msd, osd = get_state_dict(self.runner, opt.optimizer,
                                  options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        return {k[len("lm."):] if k.startswith("lm.") else k: v for k, v in msd.items()}, osd

    def set_full_states(self, opt, weights: dict, osd: dict) -> None:
        """Load whole (model, optimizer) state dicts into the FSDP shards (every process, the same dicts)."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

        set_state_dict(self.runner, opt.optimizer, model_state_dict={f"lm.{k}": v for k, v in weights.items()},
                       optim_state_dict=osd, options=StateDictOptions(full_state_dict=True, strict=False))

    def with_full_model(self, work: Callable, share: bool = True):
        """work(model) on process 0 with the whole model: the LM itself, or under FSDP an unsharded copy built from
        the gathered state (every process takes part in the gather); its result on every process as on_main."""
        sd = self.full_state()
        if sd is None:
            return self.on_main(lambda: work(self.lm), share)

        def run():
            copy = type(self.lm)(self.lm.config)
            copy.load_state_dict(sd, strict=False)
            copy.tie_weights()
            return work(copy.eval())
        return self.on_main(run, share)

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

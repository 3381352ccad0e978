"""The one training loop every method shares (accelerate): methods differ only in their loss.

AdamW (β 0.9/0.999, wd 0), cosine schedule with 10% warmup, grad clip 1.0, gradient accumulation, bf16 autocast of
the model body or fp32 (`precision`), activation checkpointing off/full/selective (`grad_ckpt`; both
`bench.modeling.precision`), the LM head applied chunk by chunk inside the losses (`bench.head`). Validation every `eval_every` steps keeps a checkpoint per interval; the best by the
validation score becomes the final model. Atomic training state every `save_every` steps; `resume=True` picks up.
Multi-GPU / multi-node: run the same command under `accelerate launch` (configs/accelerate/*.yaml).
"""
from __future__ import annotations

import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from bench import dist
from bench.errors import BenchError
from bench.method import LossBatch, Method
from bench.modeling.forward import packed_forward, pad_batch
from bench.modeling.precision import GRAD_CKPT, PRECISIONS, autocast, resolve_precision, set_grad_ckpt
from bench.progress import console, progress_bar
from bench.signals.cache import SignalEntry
from bench.store.stages import remove_owned
from bench.train.checkpoint import latest_state, load_sharded_state, load_state, save_state
from bench.train.heap import release_heap
from bench.train.parallel import Parallel
from bench.train.tracking import Tracking


@dataclass
class TrainConfig:
    lr: float = 5e-7
    batch_size: int = 8
    grad_accum: int = 1
    epochs: float = 1.0
    max_steps: int = 0  # >0 overrides epochs
    warmup_ratio: float = 0.1
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    eval_every: int = 0  # 0: evaluate once at the end (when an evaluator is given)
    save_every: int = 0  # 0: no intermediate resumable state
    log_every: int = 1
    seed: int = 0
    keep_checkpoints: bool = False  # a run keeps every validation checkpoint in <run>/checkpoints/
    precision: str = "auto"  # auto | fp32 | bf16: autocast of the model body (bench.modeling.precision)
    grad_ckpt: str = "off"  # off | full | selective: activation checkpointing (bench.modeling.precision)

    def validate(self) -> None:
        for name, choices in (("precision", PRECISIONS), ("grad_ckpt", tuple(GRAD_CKPT))):
            if getattr(self, name) not in choices:
                raise BenchError(f"training setting {name}={getattr(self, name)!r} is invalid; choose one of "
                                 f"{', '.join(choices)}")
        ints = ("batch_size", "grad_accum", "max_steps", "eval_every", "save_every", "log_every", "seed")
        floats = ("lr", "epochs", "warmup_ratio", "weight_decay", "max_grad_norm")
        for name in ints + floats:
            v = getattr(self, name)
            ok = isinstance(v, int) if name in ints else isinstance(v, (int, float))
            if not ok or isinstance(v, bool) or (isinstance(v, float) and not math.isfinite(v)):
                raise BenchError(f"training setting {name}={v!r} must be a finite {'integer' if name in ints else 'number'}")
        rules = [("lr", self.lr > 0, "> 0"), ("batch_size", self.batch_size >= 1, ">= 1"),
                 ("grad_accum", self.grad_accum >= 1, ">= 1"), ("epochs", self.epochs > 0, "> 0"),
                 ("max_steps", self.max_steps >= 0, ">= 0"), ("warmup_ratio", 0 <= self.warmup_ratio <= 1, "in [0, 1]"),
                 ("weight_decay", self.weight_decay >= 0, ">= 0"), ("max_grad_norm", self.max_grad_norm > 0, "> 0"),
                 ("eval_every", self.eval_every >= 0, ">= 0"), ("save_every", self.save_every >= 0, ">= 0"),
                 ("log_every", self.log_every >= 1, ">= 1")]
        for name, ok, what in rules:
            if not ok:
                raise BenchError(f"training setting {name}={getattr(self, name)!r} is invalid; it must be {what}")


# change how a run is kept, not its result (activation checkpointing recomputes the same values)
OPERATIONAL_KEYS = ("save_every", "log_every", "keep_checkpoints", "grad_ckpt")


def result_settings(train: dict) -> dict:
    """Training settings that determine the result (identity keys leave out the operational ones); the precision
    as resolved on this machine ("auto" trains in bf16 on one machine and fp32 on another)."""
    out = {k: v for k, v in train.items() if k not in OPERATIONAL_KEYS}
    out["precision"] = resolve_precision(out.get("precision", TrainConfig.precision))
    if dist.world() > 1:  # keyed by the global batch: N processes × batch b train as one process × batch N·b
        out["batch_size"] = out.get("batch_size", TrainConfig.batch_size) * dist.world()
    return out


def result_preset(preset: dict) -> dict:
    """The run preset without the training settings that do not change a result (save_every, ...)."""
    out = {}
    for key, value in preset.items():
        if isinstance(value, dict) and isinstance(value.get("train"), dict):
            value = {**value, "train": result_settings(value["train"])}
        out[key] = value
    return out


@dataclass
class TrainData:
    """Per-example token pairs for each side, and the cache entries that hold each declared signal."""

    n: int
    sides: dict[str, list[tuple[list[int], list[int]]]]
    signals: dict[str, tuple[SignalEntry, str, str]] = field(default_factory=dict)  # name -> (entry, kind, side)


@dataclass
class TrainResult:
    steps: int
    history: list[dict]
    evals: list[dict]
    final_dir: Path | None
    seconds: float
    tokens: int
    state_bytes: int = 0  # this process's parameters + optimizer state at the end (local shards under FSDP)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / max(self.seconds, 1e-9)


def make_optimizer(model, tcfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW (β 0.9/0.999); the fused kernel where torch has it (about 3x faster than the per-tensor loop on CPU)."""
    params = [p for p in model.parameters() if p.requires_grad]
    kwargs = dict(lr=tcfg.lr, betas=(0.9, 0.999), weight_decay=tcfg.weight_decay)
    try:
        return torch.optim.AdamW(params, fused=True, **kwargs)
    except (RuntimeError, TypeError):
        return torch.optim.AdamW(params, **kwargs)


def values_index(lengths: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    vseg = torch.cat([torch.full((T + 1,), b) for b, T in enumerate(lengths)])
    vpos = torch.cat([torch.arange(T + 1) for T in lengths])
    return vseg, vpos


def collate(data: TrainData, idx: list[int], pad_id: int) -> tuple[dict, dict[str, dict[str, torch.Tensor]]]:
    batches = {side: pad_batch([pairs[i] for i in idx], pad_id) for side, pairs in data.sides.items()}
    signals = {}
    for name, (entry, kind, side) in data.signals.items():
        sig = entry.gather(kind, idx)
        if kind == "values":
            sig["vseg"], sig["vpos"] = values_index([len(data.sides[side][i][1]) for i in idx])
        signals[name] = sig
    return batches, signals


def loss_batch(model, ref_model, batches, signals, device, chunked: bool = True, runner=None) -> LossBatch:
    """The policy (and online reference) rows of every side, on the chunked LM head (`chunked=False`: dense
    [N, V] logits, for comparisons), and the batch's signals on `device`. `runner`: the data-parallel wrapper that
    runs the policy's body (bench.train.parallel)."""
    policy = {side: packed_forward(model, b, chunked=chunked, runner=runner) for side, b in batches.items()}
    ref = {}
    if ref_model is not None:
        with torch.no_grad():
            ref = {side: packed_forward(ref_model, b, chunked=chunked) for side, b in batches.items()}
    sig = {n: {k: v.to(device) for k, v in d.items()} for n, d in signals.items()}
    return LossBatch(policy=policy, signals=sig, ref=ref)


def train(model, method: Method, mcfg, data: TrainData, tcfg: TrainConfig, *, pad_id: int, work_dir: Path,
          ref_model=None, evaluate: Callable | None = None, resume: bool = False, desc: str = "train",
          fingerprint: dict | None = None, tracking: Tracking | None = None) -> TrainResult:
    """Train `model` with `method`'s loss. The caller owns `work_dir` (it holds the run's or stage's lock) and
    deletes it once the result is safely stored: the resumable state stays there until then. `fingerprint`
    identifies the training configuration; `resume=True` refuses a saved state with another fingerprint.
    `tracking` (bench.train.tracking) gets every step and validation: train_log.jsonl and accelerate's trackers."""
    from accelerate import Accelerator
    from transformers import get_cosine_schedule_with_warmup

    tcfg.validate()
    if data.n == 0:
        raise BenchError(f"{desc}: no training examples; check the dataset split sizes")
    work_dir = Path(work_dir)
    tracking = tracking or Tracking()
    precision = resolve_precision(tcfg.precision, "cuda" if torch.cuda.is_available() else "cpu")
    # autocast is ours (bench.modeling.precision), not accelerate's: its mixed-precision state is one per process, and a
    # pipeline trains stages at different precisions in one process
    accel = Accelerator(gradient_accumulation_steps=tcfg.grad_accum, mixed_precision="no",
                        cpu=not torch.cuda.is_available() and dist.world() > 1, **tracking.accelerator_kwargs())
    set_grad_ckpt(model, tcfg.grad_ckpt)
    par = Parallel(accel)
    torch.manual_seed(tcfg.seed)
    per_step = tcfg.batch_size * tcfg.grad_accum * accel.num_processes
    total = tcfg.max_steps or max(1, math.ceil(tcfg.epochs * data.n / per_step))
    if ref_model is not None:
        ref_model.eval().requires_grad_(False).to(accel.device)
    model, runner, opt = par.prepare(model, lambda m: make_optimizer(m, tcfg))  # FSDP: over the sharded params
    sched = get_cosine_schedule_with_warmup(opt, math.ceil(tcfg.warmup_ratio * total), total)
    step, history, evals = 0, [], []
    fingerprint = {"method": method.name, "settings": mcfg.to_dict(), "train": result_settings(vars(tcfg)), "n": data.n,
                   "total_steps": total, "precision": precision, **(fingerprint or {})}
    state = latest_state(work_dir) if resume else None
    if state is not None and par.fsdp:  # every process loads the whole state into its shards
        step, extra = load_sharded_state(state, lambda w, o: par.set_full_states(opt, w, o), sched, fingerprint)
    elif state is not None:
        step, extra = load_state(state, model, opt, sched, fingerprint)
    if state is not None:
        history, evals = extra.get("history", []), extra.get("evals", [])
        console.print(f"[yellow]{desc}: resuming at step {step}/{total}")
    eval_every = tcfg.eval_every or total
    tracking.start(accel, history, evals)

    def order_for(epoch: int) -> list[int]:
        g = torch.Generator().manual_seed(tcfg.seed * 1000 + epoch)
        return torch.randperm(data.n, generator=g).tolist()

    t0, tokens = time.perf_counter(), 0
    with progress_bar(desc, total=total, unit="steps") as bar:
        bar.advance(step)
        while step < total:
            model.train()
            t_step, step_tokens = time.perf_counter(), 0
            logs: dict[str, float] = {}
            micro_batches = []
            for micro in range(tcfg.grad_accum):
                g = (step * tcfg.grad_accum + micro) * tcfg.batch_size * accel.num_processes
                epoch, pos = divmod(g, data.n)
                order = order_for(epoch) + order_for(epoch + 1)
                idx = order[pos:pos + tcfg.batch_size * accel.num_processes][accel.process_index::accel.num_processes]
                micro_batches.append(collate(data, idx, pad_id))
            norm = par.step_norm(method, mcfg, micro_batches)  # the global step's counts: one collective
            for batches, signals in micro_batches:
                seq_len = max(b.input_ids.shape[1] for b in batches.values())
                with accel.accumulate(runner), autocast(precision, accel.device.type, seq_len,
                                                        weight_cache=tcfg.grad_ckpt == "off"):
                    lb = loss_batch(model, ref_model, batches, signals, accel.device, runner=par.runner)
                    lb.norm = norm
                    loss, metrics = method.loss(lb, mcfg)
                    if not par.all_finite(loss):  # every process stops together, none waits in a collective
                        raise BenchError(f"{desc}: loss became {loss.item()} at step {step}; lower lr or check "
                                         "the method settings")
                    accel.backward(loss)
                    if accel.sync_gradients:
                        accel.clip_grad_norm_(runner.parameters(), tcfg.max_grad_norm)
                    opt.step()
                    sched.step() if accel.sync_gradients else None
                    opt.zero_grad()
                n_tok, values = par.mean_logs(sum(b.n_tokens for b in batches.values()), {"loss": loss, **metrics})
                step_tokens += n_tok
                for k, v in values.items():
                    logs[k] = logs.get(k, 0.0) + v / tcfg.grad_accum
            release_heap()  # the step's freed activations and gradients back to the OS (bench.train.heap)
            step += 1
            tokens += step_tokens
            history.append({"step": step, "lr": sched.get_last_lr()[0], **logs})
            tracking.step(accel, history[-1], step_tokens, time.perf_counter() - t_step, time.perf_counter() - t0)
            bar.advance(1, tokens=step_tokens, loss=logs["loss"])
            if evaluate is not None and (step % eval_every == 0 or step == total):
                # process 0 generates and keeps the checkpoint; every process records the same result
                evals.append(par.with_full_model(lambda m: _evaluate_and_keep(m, evaluate, step, work_dir)))
                tracking.eval(accel, evals[-1])
            if tcfg.save_every and (step % tcfg.save_every == 0 or step == total):
                full = par.full_states(opt)  # FSDP: gathered by every process, written by process 0
                par.on_main(lambda: save_state(work_dir, model, opt, sched, step, {"history": history, "evals": evals},
                                               fingerprint, full), share=False)
    seconds = time.perf_counter() - t0
    state_bytes = par.state_bytes(model, opt)
    tracking.end(accel)
    set_grad_ckpt(model, "off")
    par.with_full_model(lambda m: _select_final(m, evals, work_dir), share=False)
    return TrainResult(step, history, evals, work_dir / "final", seconds, tokens, state_bytes)


def _evaluate_and_keep(model, evaluate: Callable, step: int, work_dir: Path) -> dict:
    result = {"step": step, **evaluate(model)}
    rel = f"checkpoints/step-{step:06d}"  # stored relative to the work dir: a resume may run from another cwd
    ckpt = work_dir / rel
    if ckpt.exists():
        remove_owned(ckpt, work_dir, None)
    model.save_pretrained(ckpt, safe_serialization=True)
    result["checkpoint"] = rel
    return result


def _select_final(model, evals: list[dict], work_dir: Path) -> Path:
    """The best validation checkpoint (ties -> the later one) becomes work_dir/final. The interval checkpoints stay
    in the work dir (a resume after a later crash selects again from them) until the caller removes it."""
    final = work_dir / "final"
    if final.exists():
        remove_owned(final, work_dir, None)
    if evals:
        best = max(evals, key=lambda e: (e["score"], e["step"]))
        shutil.copytree(work_dir / best["checkpoint"], final)
        for e in evals:
            e["selected"] = e is best
    else:
        model.save_pretrained(final, safe_serialization=True)
    return final

"""Training-step time of each method relative to an SFT step on the same tokens, in one run, on the embedded
default (real SmolLM2 teacher/student; teachers and signals come from the cache, built first if missing).

    python benchmarks/step_cost.py [--methods dpo,dckd,adpa,tvkd] [--batch 8] [--repeats 5] [--preset smoke]

A step = collate (incl. reading cached signals) + policy forward on the method's sides + loss + backward.
The SFT reference runs the same sides through the same forward and a plain NLL loss. Ratios > 1 are the
method's overhead (signal reads, sparse KL math, an online reference pass). Also prints the signal cache's bytes
per token for each cached kind.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from bench.config import RunConfig
from bench.pipeline import Pipeline
from bench.registry import get_method, method_names
from bench.signal_cache import bytes_per_token
from bench.trainer import TrainData, collate, loss_batch
from methods.sft import sft_loss


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--methods", default=",".join(m for m in method_names() if m != "sft"))
    ap.add_argument("--preset", default="smoke")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    torch.manual_seed(0)
    pipe = Pipeline(RunConfig(method="sft", preset=args.preset))
    alias = {"reference": "sft_student"}
    print(f"{'method':<12}{'step s':>9}{'SFT s':>9}{'ratio':>8}{'tokens':>8}  signals")
    entries = {}
    for name in args.methods.split(","):
        method = get_method(name)
        mcfg = method.make_config({})
        for role in sorted(method.required_models(mcfg)):
            pipe.model_dir(alias.get(role, role))
        data = pipe.train_data(method, mcfg, "pref_train", alias)
        for sig, (entry, _, _) in data.signals.items():
            entries[sig] = entry
        model = pipe.load(alias.get(method.init_from(mcfg), method.init_from(mcfg)))
        model.train()
        ref = pipe.load("sft_student").eval() if method.reference(mcfg) == "online" else None
        idx = list(range(min(args.batch, data.n)))
        sft_data = TrainData(n=data.n, sides=data.sides)

        def method_step():
            batches, signals = collate(data, idx, pipe.tok.pad_token_id)
            loss, _ = method.loss(loss_batch(model, ref, batches, signals, "cpu"), mcfg)
            loss.backward()
            model.zero_grad(set_to_none=True)

        def sft_step():
            batches, _ = collate(sft_data, idx, pipe.tok.pad_token_id)
            lb = loss_batch(model, None, batches, {}, "cpu")
            loss = sum(sft_loss(p) for p in lb.policy.values())
            loss.backward()
            model.zero_grad(set_to_none=True)

        t_m, t_s = timed(method_step, args.repeats), timed(sft_step, args.repeats)
        batches, _ = collate(sft_data, idx, pipe.tok.pad_token_id)
        ntok = sum(b.n_tokens for b in batches.values())
        print(f"{name:<12}{t_m:>9.3f}{t_s:>9.3f}{t_m / t_s:>8.2f}{ntok:>8}  {','.join(data.signals) or '-'}",
              flush=True)
    print("\nsignal cache bytes per response token (per state for values):")
    seen = set()
    for sig, entry in entries.items():
        if entry.path in seen:
            continue
        seen.add(entry.path)
        print(f"  {entry.path.name}: " + ", ".join(f"{k}={v:.1f}" for k, v in bytes_per_token(entry).items()))


if __name__ == "__main__":
    main()

"""The GPU check, ready for the day a GPU is lent (`benchmarks/gpu_check.sh`, one command, one JSON object).

    bash benchmarks/gpu_check.sh                 # a 1B-shaped Llama student (Llama-3.2-1B's shape), bf16, on GPU 0
    bash benchmarks/gpu_check.sh --cpu --tiny    # the same code on a 2-layer toy on CPU (CI runs it: it cannot rot)

What it measures, with the shared trainer's own step (`benchmarks.harness.OurStep`: collate with signal entries,
body under the precision's autocast, loss on the chunked LM head, backward, clip 1.0, AdamW): DCKD and DPO steps
on random tokens, the teacher signals (DCKD's top-k, DPO's reference log-probs) taken from the model's own
no-grad pass (the check is about the student's step, not a teacher). Per method: seconds per step (median of the
measured steps after warm-up), tokens per second, model FLOPs utilisation against the GPU's dense bf16 peak
(6·N FLOPs per token plus attention, 12·layers·hidden·sequence length, as in PaLM's appendix B; null where the
peak is unknown or on CPU), peak memory (torch.cuda.max_memory_allocated; peak RSS on CPU) and the loss.
DDP against FSDP2 needs more than one GPU and a launch (`accelerate launch` with configs/accelerate/multi_gpu.yaml
and fsdp.yaml); this check runs in one process, so the JSON says so instead of a number.
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from bench.modeling.forward import pad_batch  # noqa: E402
from bench.registry import get_method  # noqa: E402
from bench.signals.compute import topk_signal  # noqa: E402
from bench.train.trainer import TrainData  # noqa: E402
from benchmarks.harness import OurStep, median, peak_rss_bytes  # noqa: E402

# dense bf16 peak FLOP/s by device name (vendor data sheets, SXM parts, no sparsity)
PEAK_BF16 = {"H200": 989.4e12, "H100": 989.4e12, "A100": 312e12, "L40S": 362e12, "L4": 121e12, "A10": 125e12}
SHAPES = {  # Llama-3.2-1B: hidden 2048, 16 layers, 32 heads (8 KV), MLP 8192, vocabulary 128,256, tied head
    "1b": dict(vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
               num_attention_heads=32, num_key_value_heads=8, tie_word_embeddings=True),
    "tiny": dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, tie_word_embeddings=True),
}
WORKLOADS = {"1b": dict(n_seq=4, prompt=64, response=448, warmup=2, steps=5),
             "tiny": dict(n_seq=2, prompt=8, response=24, warmup=1, steps=2)}


class SignalRows:
    """An in-memory signal entry (the trainer's `gather` protocol): per-example rows of one side."""

    def __init__(self, rows: dict[str, torch.Tensor], lengths: list[int]):
        self.rows, self.starts = rows, [0, *torch.tensor(lengths).cumsum(0).tolist()]

    def gather(self, kind: str, idx: list[int]) -> dict[str, torch.Tensor]:
        return {k: torch.cat([v[self.starts[i]:self.starts[i + 1]] for i in idx]) for k, v in self.rows.items()}


def own_signals(model, pairs: dict, k: int) -> dict[str, tuple[SignalRows, str, str]]:
    """The model's own top-k (as DCKD's teacher) and response log-probs (as DPO's reference) on each side."""
    out = {}
    lengths = {s: [len(r) for _, r in ps] for s, ps in pairs.items()}
    with torch.no_grad():
        for side, ps in pairs.items():
            b = pad_batch(ps, 0)
            dev = next(model.parameters()).device
            h = model.model(input_ids=b.input_ids.to(dev), attention_mask=b.attention_mask.to(dev)).last_hidden_state
            z = model.lm_head(h[b.row_b.to(dev), b.row_pos.to(dev)]).float()
            top = {key: v.cpu() for key, v in topk_signal(z, k).items()}
            logps = torch.log_softmax(z, -1).gather(-1, b.labels.to(dev)[:, None]).squeeze(-1).cpu()
            out[f"dpo_teacher.topk.{side}"] = (SignalRows(top, lengths[side]), "topk", side)
            out[f"reference.logps.{side}"] = (SignalRows({"logps": logps}, lengths[side]), "logps", side)
    return out


def peak_flops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for key, v in PEAK_BF16.items() if key in name), None)


def check(shape: str, device: torch.device, precision: str, k: int = 50) -> dict:
    from transformers import LlamaConfig, LlamaForCausalLM

    w = WORKLOADS[shape]
    torch.manual_seed(0)
    cfg = LlamaConfig(max_position_embeddings=2048, pad_token_id=0, **SHAPES[shape])
    model = LlamaForCausalLM(cfg).to(device)
    n_params = sum(p.numel() for p in model.parameters())
    V, g = cfg.vocab_size, torch.Generator().manual_seed(0)
    pairs = {s: [(torch.randint(1, V, (w["prompt"],), generator=g).tolist(),
                  torch.randint(1, V, (w["response"],), generator=g).tolist()) for _ in range(w["n_seq"])]
             for s in ("chosen", "rejected")}
    data = TrainData(n=w["n_seq"], sides=pairs, signals=own_signals(model, pairs, min(k, V)))
    seq = w["prompt"] + w["response"]
    flops_per_token = 6 * n_params + 12 * cfg.num_hidden_layers * cfg.hidden_size * seq
    peak = peak_flops(device)
    results = {}
    for name in ("dckd", "dpo"):
        method = get_method(name)
        step = OurStep(model, method, method.make_config({}), data, list(range(w["n_seq"])), 0, precision)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        times = []
        for i in range(w["warmup"] + w["steps"]):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t0 = time.perf_counter()
            step()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if i >= w["warmup"]:
                times.append(time.perf_counter() - t0)
        s = median(times)
        tok_s = step.tokens / s
        results[name] = {
            "seconds_per_step": round(s, 4), "tokens_per_step": step.tokens, "tokens_per_s": round(tok_s, 1),
            "mfu": round(flops_per_token * tok_s / peak, 4) if peak else None,
            "peak_memory_bytes": (torch.cuda.max_memory_allocated(device) if device.type == "cuda"
                                  else peak_rss_bytes()),
            "loss": step.last_loss, "loss_finite": math.isfinite(step.last_loss),
        }
    return {"shape": shape, "parameters": n_params, "precision": precision, "sequence_length": seq,
            "flops_per_token": flops_per_token, "peak_bf16_flops": peak, "methods": results}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cpu", action="store_true", help="run on CPU (fp32 unless --precision says otherwise)")
    ap.add_argument("--tiny", action="store_true", help="a 2-layer toy instead of the 1B shape")
    ap.add_argument("--precision", choices=("bf16", "fp32"), default=None, help="default: bf16 on GPU, fp32 on CPU")
    args = ap.parse_args(argv)
    if not args.cpu and not torch.cuda.is_available():
        print("error: no GPU visible (torch.cuda.is_available() is False); run with --cpu --tiny to check the "
              "script here", file=sys.stderr)
        raise SystemExit(2)
    device = torch.device("cpu" if args.cpu else "cuda:0")
    precision = args.precision or ("fp32" if args.cpu else "bf16")
    out = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
           "gpus": torch.cuda.device_count(), "torch": torch.__version__,
           **check("tiny" if args.tiny else "1b", device, precision)}
    out["ddp_vs_fsdp"] = (f"not measured: {out['gpus']} GPU(s) visible" if out["gpus"] < 2 else
                          "not measured by this one-process check: launch a run under configs/accelerate/"
                          "multi_gpu.yaml and fsdp.yaml (docs/SCALING.md)")
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()

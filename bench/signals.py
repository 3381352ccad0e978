"""Compute a model's per-token signals over one side of a split (one forward pass, every kind at once)."""
from __future__ import annotations

from collections import Counter

import torch

from bench.errors import BenchError
from bench.forward import pad_batch, packed_forward
from bench.progress import progress_bar

# Forward passes made by signal computation, by model key (tests use it to prove cache reuse).
FORWARD_PASSES: Counter = Counter()

#: Version of what a cache entry holds; part of the signal cache key, so entries written by older code (whose
#: tail was not derived from the stored float16 log-probs) are never reused. Bump it when the stored data changes.
SIGNAL_FORMAT = 2


def check_k(k: int, vocab: int) -> None:
    """1 ≤ k ≤ V, or one clear error line."""
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= vocab:
        raise BenchError(f"k={k!r} is invalid; the teacher top-k size must be an integer between 1 and the "
                         f"vocabulary size {vocab}")


def round_down_half(x: torch.Tensor) -> torch.Tensor:
    """Log-probs (≤ 0) as float16, each rounded toward −inf: exp(stored) ≤ exp(x), so the stored top-k masses
    never sum above the true ones and the tail derived from them is ≥ 0 (no clamping needed in practice)."""
    x = x.clamp(max=0.0)
    h = x.to(torch.float16)
    bits = h.view(torch.int16)
    # one float16 step toward −inf: magnitude bits + 1 for a negative number; ±0 → the smallest negative subnormal
    down = torch.where(h == 0, torch.full_like(bits, -32767), bits + 1)
    return torch.where(h.to(x.dtype) > x, down, bits).view(torch.float16)


def logsumexp64(z: torch.Tensor, rows: int = 256) -> torch.Tensor:
    """Row logsumexp in float64, a few rows at a time (bounded memory for [N, V] logits)."""
    return torch.cat([torch.logsumexp(z[i:i + rows].double(), dim=-1) for i in range(0, z.shape[0], rows)])


def topk_signal(logits: torch.Tensor, k: int) -> dict[str, torch.Tensor]:
    """Top-k ids (int32), their log-probs under the full softmax (computed in float64, stored as float16 rounded
    toward −inf) and the tail mass 1 − Σ exp(stored log-probs) (float32) derived from the STORED values, so the
    k+1 bins sum to 1 up to the float32 rounding of the tail."""
    check_k(k, logits.shape[-1])
    z = logits.float()
    top, ids = z.topk(k, dim=-1)  # the top-k of the logits is the top-k of the log-probs
    stored = round_down_half(top.double() - logsumexp64(z)[:, None])
    tail = (1.0 - stored.double().exp().sum(-1)).clamp(min=0.0)
    return {"topk_ids": ids.to(torch.int32), "topk_logps": stored, "tail": tail.float()}


def value_signal(logits: torch.Tensor, next_ids: torch.Tensor, tau: float) -> dict[str, torch.Tensor]:
    """Per-state scalars of the logits z: soft value τ·lse(z/τ), lse, max, E_π[z], top1−top2 margin, z[next]."""
    z = logits.float()
    lse = torch.logsumexp(z, -1)
    top2 = z.topk(2, dim=-1).values
    z_label = torch.full_like(lse, float("nan"))
    has_next = next_ids >= 0
    z_label[has_next] = z[has_next].gather(-1, next_ids[has_next, None]).squeeze(-1)
    return {
        "v_soft": tau * torch.logsumexp(z / tau, -1), "v_lse": lse, "v_max": top2[:, 0],
        "v_expect": (torch.softmax(z, -1) * z).sum(-1), "v_margin": top2[:, 0] - top2[:, 1], "z_label": z_label,
    }


@torch.no_grad()
def compute_side_signals(model, pairs: list[tuple[list[int], list[int]]], writers: dict, *, k: int, tau: float,
                         pad_id: int, batch_size: int, model_key: str, desc: str) -> tuple[int, int]:
    """Fill the cache writers with topk / logps / values for each (prompt_ids, response_ids) pair, in order.
    Returns (tokens processed, forward passes)."""
    model.eval()
    tokens = passes = 0
    with progress_bar(desc, total=len(pairs), unit="seq") as bar:
        for start in range(0, len(pairs), batch_size):
            chunk = pairs[start:start + batch_size]
            batch = pad_batch(chunk, pad_id)
            packed, final = packed_forward(model, batch, with_final=True)
            FORWARD_PASSES[model_key] += 1
            passes += 1
            tokens += batch.n_tokens
            tk = topk_signal(packed.logits, k)
            lp = packed.token_logps().float()
            row = 0
            for b, (_, resp) in enumerate(chunk):
                T = len(resp)
                sl = slice(row, row + T)
                writers["topk"].add(**{n: t[sl].cpu() for n, t in tk.items()})
                writers["logps"].add(logps=lp[sl].cpu())
                states = torch.cat([packed.logits[sl], final[b:b + 1]])
                nxt = torch.tensor(list(resp) + [-1], device=states.device)
                writers["values"].add(**{n: t.cpu() for n, t in value_signal(states, nxt, tau).items()})
                row += T
            bar.advance(len(chunk), tokens=batch.n_tokens)
    return tokens, passes

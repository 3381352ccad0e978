"""Compute a model's per-token signals over one side of a split (one forward pass, every kind at once)."""
from __future__ import annotations

import contextlib
from collections import Counter
from typing import Callable, ContextManager

import torch

from bench.errors import BenchError
from bench.modeling.forward import packed_forward, pad_batch
from bench.progress import progress_bar
from bench.tensors import _token_logps

# Forward passes made by signal computation, by model key (tests use it to prove cache reuse).
FORWARD_PASSES: Counter = Counter()

#: Version of what a cache entry holds; part of the signal cache key, so entries written by older code are never
#: reused. Bump it when the stored data changes. 2: tail derived from the stored float16 log-probs; 3: uint16 ids,
#: 15-bit packed log-probs, tail recomputed on read (`bench.signals.codec`).
SIGNAL_FORMAT = 3


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


def _signal_rows(z: torch.Tensor, labels: torch.Tensor, k: int, tau: float):
    """Every per-row signal of a chunk of logits [c, V] in one pass over it (see `topk_signal`, `value_signal`)."""
    tk = topk_signal(z, k)
    vals = value_signal(z, labels, tau)
    return (tk["topk_ids"], tk["topk_logps"], _token_logps(z, labels)[0].float(), *(vals[n] for n in VALUE_FIELDS))


VALUE_FIELDS = ("v_soft", "v_lse", "v_max", "v_expect", "v_margin", "z_label")


@torch.no_grad()
def compute_side_signals(model, pairs: list[tuple[list[int], list[int]]], writers: dict, *, k: int, tau: float,
                         pad_id: int, batch_size: int, model_key: str, desc: str,
                         autocast: Callable[[int], ContextManager] | None = None) -> tuple[int, int]:
    """Fill the cache writers with topk / logps / values for each (prompt_ids, response_ids) pair, in order.
    The body runs under `autocast(padded_length)` (the consuming stage's precision); the LM head and every signal
    are computed chunk by chunk in float32 at least (no [N, V] logits of a whole batch). Returns (tokens processed,
    passes)."""
    model.eval()
    tokens = passes = 0
    with progress_bar(desc, total=len(pairs), unit="seq") as bar:
        for start in range(0, len(pairs), batch_size):
            chunk = pairs[start:start + batch_size]
            batch = pad_batch(chunk, pad_id)
            with (autocast(batch.input_ids.shape[1]) if autocast else contextlib.nullcontext()):
                packed, final = packed_forward(model, batch, with_final=True)
            FORWARD_PASSES[model_key] += 1
            passes += 1
            tokens += batch.n_tokens
            ids, logps, lp, *vals = packed.rows(_signal_rows, packed.labels, k, tau)
            last = value_signal(final.float(), torch.full((batch.n_seq,), -1, device=final.device), tau)
            row = 0
            for b, (_, resp) in enumerate(chunk):
                sl = slice(row, row + len(resp))
                writers["topk"].add(topk_ids=ids[sl].cpu(), topk_logps=logps[sl].cpu())
                writers["logps"].add(logps=lp[sl].cpu())
                writers["values"].add(**{n: torch.cat([v[sl], last[n][b:b + 1]]).cpu()
                                         for n, v in zip(VALUE_FIELDS, vals)})
                row += len(resp)
            bar.advance(len(chunk), tokens=batch.n_tokens)
    return tokens, passes

"""Tensor helpers shared by every loss: packed per-token rows, segment reductions, sparse (k+1-bin) KL.

Packed layout: one row per response token of a batch (sequence order, then time); `seg[i]` is the sequence
index of row i. See docs/ARCHITECTURE.md.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Packed:
    """Per-token logits of one side ("chosen", "rejected", "gen:<source>") of a batch."""

    logits: torch.Tensor  # [N, V]
    labels: torch.Tensor  # [N]
    seg: torch.Tensor  # [N] sequence index
    n_seq: int

    def token_logps(self) -> torch.Tensor:
        return token_logps(self.logits, self.labels)

    def lengths(self) -> torch.Tensor:
        return torch.bincount(self.seg, minlength=self.n_seq).to(self.logits.dtype)


def token_logps(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[label] per row, without materialising a second [N, V] tensor for the gather."""
    return logits.gather(-1, labels[:, None]).squeeze(-1) - torch.logsumexp(logits, dim=-1)


def seg_sum(x: torch.Tensor, seg: torch.Tensor, n: int) -> torch.Tensor:
    return torch.zeros(n, dtype=x.dtype, device=x.device).index_add(0, seg, x)


def seg_mean(x: torch.Tensor, seg: torch.Tensor, n: int) -> torch.Tensor:
    counts = torch.bincount(seg, minlength=n).clamp(min=1).to(x.dtype)
    return seg_sum(x, seg, n) / counts


def student_bins(logits: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Student log-probs at the teacher's top-k ids [N, k] and of the remaining mass [N] (exact, stable).
    When the top-k covers the whole vocabulary the remaining mass is empty and its log is -inf."""
    lse = torch.logsumexp(logits, dim=-1, keepdim=True)
    logq = logits.gather(-1, ids.long()) - lse
    rest = logits.scatter(-1, ids.long(), float("-inf"))
    logq_tail = (torch.logsumexp(rest, dim=-1, keepdim=True) - lse).squeeze(-1)
    return logq, logq_tail


def teacher_bins(topk_logps: torch.Tensor, tail: torch.Tensor, eps: float = 1e-12,
                 dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """Teacher log-probs of the k bins and the tail bin (tail clamped at eps so its log is finite), in `dtype`
    (at least float32: cached log-probs are float16)."""
    if dtype not in (torch.float32, torch.float64):
        dtype = torch.float32
    return topk_logps.to(dtype), torch.log(tail.to(dtype).clamp(min=eps))


def sparse_kl(logits, topk_ids, topk_logps, tail, reverse: bool = False) -> torch.Tensor:
    """KL over k+1 bins (teacher top-k + tail) per row. Forward: KL(p_T || q_θ); reverse: KL(q_θ || p_T).
    Rows whose top-k covers the vocabulary (k == V) have no tail bin: the teacher's tail there is only rounding
    left-over, so the tail term is 0."""
    logq, logq_tail = student_bins(logits, topk_ids)
    logp, logp_tail = teacher_bins(topk_logps, tail, dtype=logq.dtype)
    logp, logp_tail = logp.to(logq.dtype), logp_tail.to(logq.dtype)
    empty = torch.isneginf(logq_tail)
    logq_tail = torch.where(empty, torch.zeros_like(logq_tail), logq_tail)  # finite, gradient-safe
    zero = torch.zeros_like(logq_tail)
    if reverse:
        q = logq.exp()
        tail_term = logq_tail.exp() * (logq_tail - logp_tail)
        return (q * (logq - logp)).sum(-1) + torch.where(empty, zero, tail_term)
    p, p_tail = logp.exp(), tail.to(logp.dtype).clamp(min=0)
    tail_term = torch.xlogy(p_tail, p_tail) - p_tail * logq_tail
    return (p * (logp - logq)).sum(-1) + torch.where(empty, zero, tail_term)

"""Tensor helpers shared by every loss: packed per-token rows, segment reductions, token log-probs, sparse
(k+1-bin) divergences and full-vocabulary ones.

Packed layout: one row per response token of a batch (sequence order, then time); `seg[i]` is the sequence
index of row i. See docs/ARCHITECTURE.md.

Precision rule: every helper here computes in `work_dtype` (float32 at least, float64 when an input is float64),
so a bfloat16 policy never rounds a cached float32 signal down and sequence sums never accumulate in bfloat16.
Losses should reach the logits only through these helpers (a later chunked LM head replaces them in one place).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch


def work_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """The dtype losses compute in: the widest floating dtype of the inputs, and at least float32."""
    dt = torch.float32
    for t in tensors:
        if t.is_floating_point():
            dt = torch.promote_types(dt, t.dtype)
    return dt


@dataclass
class Packed:
    """Per-token logits of one side ("chosen", "rejected", "gen:<source>") of a batch."""

    logits: torch.Tensor  # [N, V]
    labels: torch.Tensor  # [N]
    seg: torch.Tensor  # [N] sequence index
    n_seq: int

    def token_logps(self) -> torch.Tensor:
        return token_logps(self.logits, self.labels)

    def sequence_logps(self) -> torch.Tensor:
        """log π(y|x) = Σ_t log π(y_t|s_t) per sequence [n_seq], in work dtype."""
        return seg_sum(self.token_logps(), self.seg, self.n_seq)

    def lengths(self) -> torch.Tensor:
        return torch.bincount(self.seg, minlength=self.n_seq).to(work_dtype(self.logits))


def token_logps(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[label] per row [N], in work dtype (a bfloat16 row is promoted before the logsumexp)."""
    z = logits.to(work_dtype(logits))
    return z.gather(-1, labels[:, None]).squeeze(-1) - torch.logsumexp(z, dim=-1)


def logps_at(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """log π(a|s) (full softmax) at ids [N, k], in work dtype."""
    z = logits.to(work_dtype(logits))
    return z.gather(-1, ids.long()) - torch.logsumexp(z, dim=-1, keepdim=True)


def seg_sum(x: torch.Tensor, seg: torch.Tensor, n: int) -> torch.Tensor:
    """Per-sequence sums [n], accumulated in work dtype."""
    x = x.to(work_dtype(x))
    return torch.zeros(n, dtype=x.dtype, device=x.device).index_add(0, seg, x)


def seg_mean(x: torch.Tensor, seg: torch.Tensor, n: int) -> torch.Tensor:
    """Per-sequence means [n] (empty sequences give 0), in work dtype."""
    s = seg_sum(x, seg, n)
    return s / torch.bincount(seg, minlength=n).clamp(min=1).to(s.dtype)


def full_kl(logits_p: torch.Tensor, logits_q: torch.Tensor, tau: float = 1.0) -> torch.Tensor:
    """Full-vocabulary KL(softmax(z_p/τ) || softmax(z_q/τ)) per row [N], in work dtype (rows of equal width)."""
    dt = work_dtype(logits_p, logits_q)
    logp = torch.log_softmax(logits_p.to(dt) / tau, dim=-1)
    logq = torch.log_softmax(logits_q.to(dt) / tau, dim=-1)
    return (logp.exp() * (logp - logq)).sum(-1)


# ---------------------------------------------------------------- the k+1 bins of a cached teacher top-k


def student_bins(logits: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Student log-probs at the teacher's top-k ids [N, k] and of the remaining mass [N] (exact, stable), in
    work dtype. When the top-k covers the whole vocabulary the remaining mass is empty and its log is -inf."""
    z = logits.to(work_dtype(logits))
    lse = torch.logsumexp(z, dim=-1, keepdim=True)
    logq = z.gather(-1, ids.long()) - lse
    rest = z.scatter(-1, ids.long(), float("-inf"))
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


def kplus1_bins(logits: torch.Tensor, topk_ids: torch.Tensor, topk_logps: torch.Tensor, tail: torch.Tensor):
    """(student log-probs, teacher log-probs, teacher probs) over the bins [N, B], in work dtype: B = k+1 (the
    teacher's top-k ids plus the rest of the vocabulary), or B = k when the top-k covers the vocabulary (the
    rest is empty; the teacher's cached tail there is rounding left-over and is dropped). A zero teacher tail
    has log-prob -inf; callers weight it by its probability 0."""
    logq, logq_tail = student_bins(logits, topk_ids)
    dt = logq.dtype
    logp = topk_logps.to(dt)
    if topk_ids.shape[-1] >= logits.shape[-1]:
        return logq, logp, logp.exp()
    p_tail = tail.to(dt).clamp(min=0.0)
    logp_all = torch.cat([logp, torch.log(p_tail)[:, None]], dim=-1)
    return torch.cat([logq, logq_tail[:, None]], dim=-1), logp_all, torch.cat([logp.exp(), p_tail[:, None]], -1)


def skew_kl_bins(logq: torch.Tensor, logp: torch.Tensor, p: torch.Tensor, alpha: float, reverse: bool = False,
                 detach_mix: bool = False) -> torch.Tensor:
    """Skew divergences over bins [N, B] → [N] (DistiLLM's definitions):

      forward  SKL_α  = KL(p || α·p + (1−α)·q)
      reverse  SRKL_α = KL(q || (1−α)·p + α·q)

    `detach_mix=True` stops the gradient through the q inside the mixture (only meaningful for reverse).
    Bins where the weighting distribution has zero mass contribute exactly 0."""
    if not 0.0 <= alpha < 1.0:
        raise ValueError(f"skew alpha must be in [0, 1); got {alpha}")
    lq_mix = logq.detach() if detach_mix else logq
    if reverse:
        w_p, w_q = math.log1p(-alpha), (math.log(alpha) if alpha > 0 else float("-inf"))
    else:
        w_p, w_q = (math.log(alpha) if alpha > 0 else float("-inf")), math.log1p(-alpha)
    logm = torch.logaddexp(logp + w_p, lq_mix + w_q)
    if reverse:
        q = logq.exp()
        terms = torch.where(q > 0, q * (logq - logm), torch.zeros_like(q))
    else:
        terms = torch.where(p > 0, p * (logp - logm), torch.zeros_like(p))
    return terms.sum(-1)

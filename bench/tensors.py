"""Tensor helpers shared by every loss: packed per-token rows, segment reductions, token log-probs, sparse
(k+1-bin) divergences and full-vocabulary ones.

Packed layout: one row per response token of a batch (sequence order, then time); `seg[i]` is the sequence
index of row i. See docs/ARCHITECTURE.md.

Chunked LM head: in training a `Packed` holds no logits, only the hidden states of its rows and the LM head
(`bench.head.HeadRows`); every helper here that reads the logits is a row-wise function evaluated chunk by chunk
through `rowwise`, so no loss ever materialises a side's [N, V] logits (or their gradient). The same helpers take
a dense Packed (or a plain [N, V] logits tensor), which the loss tests use. Losses reach the logits only through
these helpers.

Precision rule: every helper here computes in `work_dtype` (float32 at least, float64 when an input is float64),
so a bfloat16 policy never rounds a cached float32 signal down and sequence sums never accumulate in bfloat16.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Callable

import torch

from bench.head import GradForm, HeadRows, RowFn


def work_dtype(*tensors) -> torch.dtype:
    """The dtype losses compute in: the widest floating dtype of the inputs, and at least float32 (a Packed
    contributes its logits' work dtype)."""
    dt = torch.float32
    for t in tensors:
        if isinstance(t, Packed):
            dt = torch.promote_types(dt, t.dtype)
        elif t.is_floating_point():
            dt = torch.promote_types(dt, t.dtype)
    return dt


@dataclass
class Packed:
    """Per-token rows of one side ("chosen", "rejected", "gen:<source>") of a batch: dense `logits` [N, V], or
    (training) `head`, the hidden states and LM head that give those logits chunk by chunk."""

    logits: torch.Tensor | None  # [N, V], None when `head` holds the rows
    labels: torch.Tensor  # [N]
    seg: torch.Tensor  # [N] sequence index
    n_seq: int
    head: HeadRows | None = None
    _memo: dict = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_head(cls, head: HeadRows, labels: torch.Tensor, seg: torch.Tensor, n_seq: int) -> "Packed":
        return cls(None, labels, seg, n_seq, head)

    @property
    def dtype(self) -> torch.dtype:
        """The work dtype of the logits (float32 at least)."""
        if self.head is not None:
            return self.head.work_dtype
        return torch.promote_types(self.logits.dtype, torch.float32)

    @property
    def vocab(self) -> int:
        return self.head.vocab if self.head is not None else self.logits.shape[-1]

    def dense_logits(self) -> torch.Tensor:
        """The whole [N, V] logits (tests and debugging; the chunked path never needs them)."""
        return self.head.dense() if self.head is not None else self.logits

    def rows(self, fn: Callable, *args) -> tuple[torch.Tensor, ...]:
        """fn(z [c, V], *args[c]) → row tensors, over the logits (chunk by chunk in head mode). Tensor arguments
        are row-aligned constants; a Packed argument contributes its logits (constant)."""
        if self.head is None:
            res = fn(self.logits, *(a.dense_logits() if isinstance(a, Packed) else a for a in args))
            return res if isinstance(res, tuple) else (res,)
        args = tuple((a.head if a.head is not None else a.logits) if isinstance(a, Packed) else a for a in args)
        if "token_logps" not in self._memo and self.head.requires_grad():
            # the first row op of a side also yields its token log-probs (one head pass serves both)
            both = _WithTokenLogps(fn) if isinstance(fn, RowFn) else functools.partial(_with_token_logps, fn)
            res = self.head.apply(both, *args, self.labels)
            self._memo["token_logps"] = res[-1]
            return res[:-1]
        return self.head.apply(fn, *args)

    def token_logps(self) -> torch.Tensor:
        if "token_logps" in self._memo:
            return self._memo["token_logps"]
        (out,) = self.rows(_token_logps, self.labels) if self.head is None else self.head.apply(_token_logps,
                                                                                              self.labels)
        if self.head is not None and self.head.requires_grad():
            self._memo["token_logps"] = out
        return out

    def sequence_logps(self) -> torch.Tensor:
        """log π(y|x) = Σ_t log π(y_t|s_t) per sequence [n_seq], in work dtype."""
        return seg_sum(self.token_logps(), self.seg, self.n_seq)

    def lengths(self) -> torch.Tensor:
        return torch.bincount(self.seg, minlength=self.n_seq).to(self.dtype)


def rowwise(x, fn: Callable, *args) -> tuple[torch.Tensor, ...]:
    """fn over the rows of `x`: a Packed (chunked in head mode) or a dense [N, V] logits tensor."""
    if isinstance(x, Packed):
        return x.rows(fn, *args)
    res = fn(x, *(a.dense_logits() if isinstance(a, Packed) else a for a in args))
    return res if isinstance(res, tuple) else (res,)


def _with_token_logps(fn: Callable, z: torch.Tensor, *args):
    *fargs, labels = args
    res = fn(z, *fargs)
    return (*(res if isinstance(res, tuple) else (res,)), _token_logps(z, labels)[0])


class _Ids(RowFn):
    """log π(a|s) at ids [c, m] (the full softmax): z[ids] − lse. dL/dz = scatter(G) − ΣG·softmax."""

    def values(self, z, lse, ids):
        z = z.to(work_dtype(z))
        return (z.gather(-1, ids.long()) - lse.to(z.dtype)[:, None],)

    def grad(self, form: GradForm, args, outs, grads):
        (g,) = grads
        if g is not None:
            form.softmax(-g.sum(-1))
            form.at(args[0].long(), g)

    def __call__(self, z, *args):
        z = z.to(work_dtype(z))
        return self.values(z, torch.logsumexp(z, dim=-1), *args)


class _Labels(_Ids):
    """log π(y|s) at one label per row [c]."""

    def values(self, z, lse, labels):
        return (super().values(z, lse, labels[:, None])[0].squeeze(-1),)

    def grad(self, form: GradForm, args, outs, grads):
        (g,) = grads
        if g is not None:
            super().grad(form, (args[0][:, None],), outs, (g[:, None],))


class _Bins(_Ids):
    """The student's k+1 bins on ids: (log π at ids [c, k], log of the remaining mass [c]). With p = softmax(z) and
    r = softmax over the complement of ids: dL/dz = scatter(G) − (ΣG + g_t)·p + g_t·r."""

    def values(self, z, lse, ids):
        z = z.to(work_dtype(z))
        ids = ids.long()
        lse = lse.to(z.dtype)
        logq = z.gather(-1, ids) - lse[:, None]
        rest = (z - lse[:, None]).exp().scatter(-1, ids, 0.0).sum(-1)  # the mass outside ids
        # a rest mass this small may have lost precision to underflowing terms: those rows exactly
        tiny = torch.finfo(z.dtype)
        exact = rest < z.shape[-1] * tiny.tiny / tiny.eps
        logq_tail = torch.where(exact, torch.ones_like(rest), rest).log()
        if exact.any():
            rows = exact.nonzero().squeeze(-1)
            zr = z[rows].scatter(-1, ids[rows], float("-inf"))
            logq_tail = logq_tail.index_put((rows,), torch.logsumexp(zr, dim=-1) - lse[rows])
        return logq, logq_tail

    def grad(self, form: GradForm, args, outs, grads):
        g, g_t = grads
        ids = args[0].long()
        if g is not None:
            super().grad(form, args, outs[:1], (g,))
        if g_t is not None:
            form.softmax(-g_t)
            form.rest_softmax(outs[1] + form.lse, ids, g_t)


class _WithTokenLogps(RowFn):
    """A RowFn plus the rows' token log-probs (the labels are the last argument)."""

    def __init__(self, fn: RowFn):
        self.fn = fn

    def values(self, z, lse, *args):
        *fargs, labels = args
        return (*self.fn.values(z, lse, *fargs), *_token_logps.values(z, lse, labels))

    def grad(self, form: GradForm, args, outs, grads):
        self.fn.grad(form, args[:-1], outs[:-1], grads[:-1])
        _token_logps.grad(form, args[-1:], outs[-1:], grads[-1:])


_token_logps, _logps_at, _student_bins = _Labels(), _Ids(), _Bins()


def token_logps(logits, labels: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[label] per row [N], in work dtype (a bfloat16 row is promoted before the logsumexp)."""
    if isinstance(logits, Packed) and torch.equal(labels, logits.labels):
        return logits.token_logps()
    return rowwise(logits, _token_logps, labels)[0]


def logps_at(logits, ids: torch.Tensor) -> torch.Tensor:
    """log π(a|s) (full softmax) at ids [N, k], in work dtype."""
    return rowwise(logits, _logps_at, ids)[0]


def seg_sum(x: torch.Tensor, seg: torch.Tensor, n: int) -> torch.Tensor:
    """Per-sequence sums [n], accumulated in work dtype."""
    x = x.to(work_dtype(x))
    return torch.zeros(n, dtype=x.dtype, device=x.device).index_add(0, seg, x)


def seg_mean(x: torch.Tensor, seg: torch.Tensor, n: int) -> torch.Tensor:
    """Per-sequence means [n] (empty sequences give 0), in work dtype."""
    s = seg_sum(x, seg, n)
    return s / torch.bincount(seg, minlength=n).clamp(min=1).to(s.dtype)


def _full_kl(z_q: torch.Tensor, z_p: torch.Tensor, tau: float) -> torch.Tensor:
    dt = work_dtype(z_p, z_q)
    logp = torch.log_softmax(z_p.to(dt) / tau, dim=-1)
    logq = torch.log_softmax(z_q.to(dt) / tau, dim=-1)
    return (logp.exp() * (logp - logq)).sum(-1)


def full_kl(logits_p, logits_q, tau: float = 1.0) -> torch.Tensor:
    """Full-vocabulary KL(softmax(z_p/τ) || softmax(z_q/τ)) per row [N], in work dtype (rows of equal width).
    p is a constant (a frozen reference or teacher); the gradient, if any, flows into q."""
    if isinstance(logits_p, torch.Tensor):
        logits_p = logits_p.detach()
    return rowwise(logits_q, _full_kl, logits_p, tau)[0]


# ---------------------------------------------------------------- the k+1 bins of a cached teacher top-k


def student_bins(logits, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Student log-probs at the teacher's top-k ids [N, k] and of the remaining mass [N] (exact, stable), in
    work dtype. When the top-k covers the whole vocabulary the remaining mass is empty and its log is -inf."""
    logq, logq_tail = rowwise(logits, _student_bins, ids)
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
    if topk_ids.shape[-1] >= (logits.vocab if isinstance(logits, Packed) else logits.shape[-1]):
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

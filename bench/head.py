"""The chunked LM head: row-wise functions of the logits without ever holding a side's whole [N, V] logits.

A side's `Packed` rows carry the hidden states h [N, D] of its response-predicting positions and the LM head
(W [V, D], bias). `HeadRows.apply(fn, *args)` evaluates a row-wise function of the logits, fn(z [c, V], *args[c]) →
tensors with c leading rows, a chunk of `chunk_rows` rows at a time: the forward keeps only the (small) outputs.

Backward (the idea of Liger's fused linear cross-entropy and TRL's chunked log-probs, generalised to any row-wise
function): every row op of a side records (fn, its row arguments, its outputs, their gradients) and hands nothing
back; one hub node per side then recomputes each chunk's logits ONCE for all the side's row ops, forms dL/dz of the
chunk, and turns it into dL/dh_c = dL/dz_c·W and dL/dW += dL/dz_cᵀ·h_c. So a side costs one head matmul per row op
in the forward plus three in the backward, whatever the number of loss terms, and the largest [*, V] tensor is
[chunk, V]. A `RowFn` (token log-probs, log-probs at ids, the k+1 student bins) gives its dL/dz in closed form
(`GradForm`: a multiple of softmax(z), of the softmax over the ids' complement, and scatters at ids: two exp passes
for all of a chunk's ops together); any other function gets its dL/dz from autograd on the chunk.

Precision: the logits are computed with autocast off, in the wider of the hidden states' and the head's dtypes (a
bfloat16-autocast body feeding a float32 head gives float32 logits) and promoted to float32 at least; functions see
`z` in that work dtype (float64 for float64 inputs, as the loss tests use). Under bfloat16 autocast on a device
whose matmul can write float32 from bfloat16 operands (CUDA), the head's matmuls take bfloat16 operands with
float32 results, as autocast does for every other linear layer; on a CPU the head stays float32.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Callable

import torch

#: Default byte budget of one chunk of float32 logits (rows = budget // (4·V)).
CHUNK_BYTES = 32 * 2**20


def chunk_rows_for(vocab: int, budget: int | None = None) -> int:
    return max(1, int(budget or CHUNK_BYTES) // (4 * max(vocab, 1)))


def _no_autocast(device: torch.device):
    try:
        return torch.autocast(device_type=device.type, enabled=False)
    except RuntimeError:  # a device type without autocast support
        return contextlib.nullcontext()


@lru_cache(maxsize=None)
def _mm_out_dtype_ok(device_type: str) -> bool:
    """Whether torch.mm(bf16, bf16, out_dtype=float32) runs on this device type."""
    try:
        a = torch.ones(2, 2, dtype=torch.bfloat16, device=device_type)
        return torch.mm(a, a, out_dtype=torch.float32).dtype == torch.float32
    except (RuntimeError, TypeError, NotImplementedError):
        return False


def low_precision_for(device: torch.device) -> torch.dtype | None:
    """bfloat16 when the head should take bf16 operands (bf16 autocast on, float32 results available)."""
    if torch.is_autocast_enabled(device.type) and torch.get_autocast_dtype(device.type) == torch.bfloat16 \
            and _mm_out_dtype_ok(device.type):
        return torch.bfloat16
    return None


class GradForm:
    """dL/dz of one chunk in closed form: a·softmax(z) + Σ b·softmax over the complement of ids + scatters."""

    def __init__(self, z: torch.Tensor, lse: torch.Tensor):
        self.z, self.lse = z, lse
        self.a = torch.zeros_like(lse)
        self.rest: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self.at_ids: list[tuple[torch.Tensor, torch.Tensor]] = []

    def softmax(self, coef: torch.Tensor) -> None:
        self.a = self.a + coef

    def rest_softmax(self, lse_rest: torch.Tensor, ids: torch.Tensor, coef: torch.Tensor) -> None:
        self.rest.append((lse_rest, ids, coef))

    def at(self, ids: torch.Tensor, vals: torch.Tensor) -> None:
        self.at_ids.append((ids, vals))

    def dz(self) -> torch.Tensor:
        """dL/dz [c, V]; overwrites z (the recomputed chunk is not needed afterwards)."""
        z = self.z
        rest = None
        for lse_rest, ids, coef in self.rest:
            empty = torch.isneginf(lse_rest)  # no rest (the ids cover the vocabulary): nothing to add
            lr = torch.where(empty, self.lse, lse_rest)
            t = (z - lr[:, None]).exp_().scatter_(-1, ids, 0.0)
            t.mul_(torch.where(empty, torch.zeros_like(coef), coef)[:, None])
            rest = t if rest is None else rest.add_(t)
        dz = z.sub_(self.lse[:, None]).exp_().mul_(self.a[:, None])  # in place: a·softmax(z)
        if rest is not None:
            dz.add_(rest)
        for ids, vals in self.at_ids:
            dz.scatter_add_(-1, ids, vals.to(dz.dtype))
        return dz


class RowFn:
    """A row-wise function of the logits with a closed-form gradient. `values(z, lse, *args)` → output tensors
    (lse = logsumexp(z) per row, computed once per chunk); `grad(form, args, outs, grads)` adds dL/dz to a
    GradForm (grads[i] is None for an output the loss did not use)."""

    def values(self, z: torch.Tensor, lse: torch.Tensor, *args) -> tuple[torch.Tensor, ...]:  # pragma: no cover
        raise NotImplementedError

    def grad(self, form: GradForm, args: tuple, outs: tuple, grads: tuple) -> None:  # pragma: no cover
        raise NotImplementedError

    def __call__(self, z: torch.Tensor, *args) -> tuple[torch.Tensor, ...]:
        """Plain evaluation on dense logits (differentiable through autograd)."""
        return self.values(z, torch.logsumexp(z, dim=-1), *args)


def _run(fn, z: torch.Tensor, lse: torch.Tensor | None, args: tuple) -> tuple[torch.Tensor, ...]:
    res = fn.values(z, lse, *args) if isinstance(fn, RowFn) else fn(z, *args)
    return res if isinstance(res, tuple) else (res,)


@dataclass
class _HeadState:
    """What the hub and the row ops of one side share (no reference back to any output tensor: no cycles)."""

    hidden: torch.Tensor  # [N, D], detached
    weight: torch.Tensor  # [V, D], detached
    bias: torch.Tensor | None
    chunk_rows: int
    low: torch.dtype | None = None  # bf16 operands with float32 results (see module docstring)
    pending: list = field(default_factory=list)  # (fn, args, outs, grads) recorded by row-op backwards
    lse: torch.Tensor | None = None  # logsumexp of every row, kept by the first closed-form forward
    _w_low: torch.Tensor | None = None

    @property
    def matmul_dtype(self) -> torch.dtype:
        return torch.promote_types(self.hidden.dtype, self.weight.dtype)

    @property
    def work_dtype(self) -> torch.dtype:
        return torch.promote_types(self.matmul_dtype, torch.float32)

    def chunks(self):
        n = self.hidden.shape[0]
        for a in range(0, n, self.chunk_rows):
            yield slice(a, min(a + self.chunk_rows, n))

    def _w(self) -> torch.Tensor:
        if self.low is not None:
            if self._w_low is None:
                self._w_low = self.weight.to(self.low)
            return self._w_low
        dt = self.matmul_dtype
        return self.weight if self.weight.dtype == dt else self.weight.to(dt)

    def _mm(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if self.low is not None:
            return torch.mm(a.to(self.low), b.to(self.low), out_dtype=torch.float32)
        dt = self.matmul_dtype
        return torch.mm(a.to(dt), b.to(dt))

    def logits(self, sl: slice) -> torch.Tensor:
        """[c, V] logits of rows `sl`, in work dtype, autocast off (no gradient)."""
        with _no_autocast(self.hidden.device):
            z = self._mm(self.hidden[sl], self._w().t())
            if self.bias is not None:
                z = z + self.bias
            return z.to(self.work_dtype)

    def backward(self, need_h: bool, need_w: bool, need_b: bool):
        """One recompute pass for every recorded row op: (dL/dh, dL/dW, dL/dbias)."""
        acc = torch.float32 if self.low is not None else self.matmul_dtype
        dh = torch.zeros_like(self.hidden) if need_h else None
        dw = None  # allocated by the first chunk's product (no zero fill of a [V, D] buffer)
        db = torch.zeros(self.weight.shape[0], dtype=acc, device=self.weight.device) if need_b else None
        pending, self.pending = self.pending, []
        closed = [p for p in pending if isinstance(p[0], RowFn)]
        other = [p for p in pending if not isinstance(p[0], RowFn)]
        for sl in self.chunks():
            z = self.logits(sl)
            dz = _autograd_dz(z, other, sl) if other else None  # before the closed form overwrites z
            if closed:
                lse = self.lse[sl] if self.lse is not None else torch.logsumexp(z, dim=-1)
                form = GradForm(z, lse)
                for fn, args, outs, grads in closed:
                    fn.grad(form, _chunk_args(args, sl), tuple(o[sl] for o in outs),
                            tuple(None if g is None else g[sl] for g in grads))
                dz = form.dz() if dz is None else form.dz().add_(dz)
            if dz is None:
                continue
            with _no_autocast(self.hidden.device):
                h = self.hidden[sl]
                if dh is not None:
                    dh[sl] = self._mm(dz, self._w()).to(dh.dtype)
                if need_w:
                    if dw is None:
                        dw = self._mm(dz.t(), h).to(acc)
                    elif self.low is None:
                        dw.addmm_(dz.t().to(acc), h.to(acc))
                    else:
                        dw += self._mm(dz.t(), h)
                if db is not None:
                    db += dz.sum(0, dtype=acc)
        self._w_low = None
        if need_w and dw is None:
            dw = torch.zeros(self.weight.shape, dtype=acc, device=self.weight.device)
        return (dh, None if dw is None else dw.to(self.weight.dtype),
                None if db is None else db.to(self.bias.dtype))


def _autograd_dz(z: torch.Tensor, pending: list, sl: slice) -> torch.Tensor | None:
    """dL/dz of a chunk for row functions without a closed form: autograd through them on the chunk."""
    with torch.enable_grad():
        zg = z.detach().requires_grad_(True)
        outs, grads = [], []
        for fn, args, _, gouts in pending:
            for o, g in zip(_run(fn, zg, None, _chunk_args(args, sl)), gouts):
                if g is not None and o.requires_grad:
                    outs.append(o)
                    grads.append(g[sl].to(o.dtype))
        if not outs:
            return None
        (dz,) = torch.autograd.grad(outs, zg, grads, allow_unused=True)
    return dz


def _chunk_args(args: tuple, sl: slice) -> tuple:
    """Row-aligned arguments of a chunk: tensors are sliced, other head rows give their chunk's logits."""
    out = []
    for a in args:
        if isinstance(a, HeadRows):
            out.append(a.state.logits(sl))
        elif isinstance(a, torch.Tensor):
            out.append(a[sl])
        else:
            out.append(a)
    return tuple(out)


class _Hub(torch.autograd.Function):
    """Anchor of a side's row ops; its backward is the one recompute pass (runs after every row op's backward)."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, state):
        ctx.state = state
        return hidden.new_zeros((), dtype=state.work_dtype)

    @staticmethod
    def backward(ctx, _):
        need = ctx.needs_input_grad
        dh, dw, db = ctx.state.backward(need[0], need[1], need[2])
        return dh, dw, db, None


class _RowOp(torch.autograd.Function):
    """fn over the chunks of one side (forward), recorded for the hub (backward)."""

    @staticmethod
    def forward(ctx, anchor, state, fn, *args):
        ctx.state, ctx.fn, ctx.args = state, fn, args
        ctx.set_materialize_grads(False)  # an output the loss does not use gets no work in the backward
        outs = _evaluate(state, fn, args)
        ctx.mark_non_differentiable(*[o for o in outs if not o.is_floating_point()])
        if isinstance(fn, RowFn):
            ctx.save_for_backward(*outs)
        return outs

    @staticmethod
    def backward(ctx, *grads):
        outs = ctx.saved_tensors if isinstance(ctx.fn, RowFn) else ()
        ctx.state.pending.append((ctx.fn, ctx.args, outs, grads))
        return (torch.zeros((), dtype=ctx.state.work_dtype, device=ctx.state.hidden.device), None, None,
                *([None] * len(ctx.args)))


def _evaluate(state: _HeadState, fn: Callable, args: tuple) -> tuple[torch.Tensor, ...]:
    parts: list[tuple[torch.Tensor, ...]] = []
    closed = isinstance(fn, RowFn)
    keep = closed and state.lse is None
    lses = []
    with torch.no_grad():
        for sl in state.chunks():
            z = state.logits(sl)
            lse = torch.logsumexp(z, dim=-1) if closed else None
            parts.append(_run(fn, z, lse, _chunk_args(args, sl)))
            if keep:
                lses.append(lse)
        if keep and lses:
            state.lse = torch.cat(lses)
        if not parts:  # no rows: run fn on an empty chunk for the output shapes
            z = state.hidden.new_zeros((0, state.weight.shape[0]), dtype=state.work_dtype)
            return _run(fn, z, torch.logsumexp(z, dim=-1) if closed else None, _chunk_args(args, slice(0, 0)))
    return tuple(torch.cat(cols) for cols in zip(*parts))


class HeadRows:
    """Hidden states of one side's rows [N, D] and the LM head that maps them to logits, chunk by chunk."""

    def __init__(self, hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                 chunk_rows: int | None = None, low: torch.dtype | None = None):
        if hidden.dim() != 2 or weight.dim() != 2 or hidden.shape[-1] != weight.shape[-1]:
            raise ValueError(f"hidden {tuple(hidden.shape)} and head weight {tuple(weight.shape)} do not match")
        self.hidden, self.weight, self.bias = hidden, weight, bias
        self.vocab = weight.shape[0]
        self.state = _HeadState(hidden.detach(), weight.detach(), None if bias is None else bias.detach(),
                                chunk_rows or chunk_rows_for(self.vocab), low)
        self._anchor: torch.Tensor | None = None

    @property
    def n(self) -> int:
        return self.hidden.shape[0]

    @property
    def work_dtype(self) -> torch.dtype:
        return self.state.work_dtype

    @property
    def device(self) -> torch.device:
        return self.hidden.device

    def requires_grad(self) -> bool:
        return torch.is_grad_enabled() and any(
            t is not None and t.requires_grad for t in (self.hidden, self.weight, self.bias))

    def apply(self, fn: Callable | RowFn, *args) -> tuple[torch.Tensor, ...]:
        """fn(z_chunk, *args_chunk) over every chunk, differentiable w.r.t. hidden, weight and bias."""
        if not self.requires_grad():
            return _evaluate(self.state, fn, args)
        for a in args:  # other head rows are constants (their logits are made without a graph)
            if isinstance(a, torch.Tensor) and a.requires_grad:
                raise ValueError("rowwise: only the rows themselves carry a gradient; pass constants as arguments")
        if self._anchor is None or self._anchor.grad_fn is None:
            self._anchor = _Hub.apply(self.hidden, self.weight, self.bias, self.state)
        return _RowOp.apply(self._anchor, self.state, fn, *args)

    def dense(self) -> torch.Tensor:
        """All [N, V] logits at once (debugging and tests only: this is what the chunking avoids)."""
        return self.state.logits(slice(0, self.n))

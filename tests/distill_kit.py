"""Hand-built inputs and dense float64 references shared by the distillation-baseline loss tests
(tests/method_losses/test_distill.py, tests/method_losses/test_distill_pairs.py); no model involved."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from bench.method import LossBatch
from bench.tensors import Packed

D = torch.float64


def packed(lengths, V, seed, scale=2.0, labels=None):
    g = torch.Generator().manual_seed(seed)
    N = sum(lengths)
    logits = torch.randn(N, V, generator=g, dtype=D) * scale
    if labels is None:
        labels = torch.randint(0, V, (N,), generator=g)
    seg = torch.repeat_interleave(torch.arange(len(lengths)), torch.tensor(lengths))
    return Packed(logits.requires_grad_(True), labels, seg, len(lengths))


def teacher_logits(N, V, seed, scale=2.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(N, V, generator=g, dtype=D) * scale


def topk_signal(t_logits, k, dtype=D):
    """What the cache stores: top-k ids and full-softmax log-probs (sorted desc) and the tail mass."""
    logp = F.log_softmax(t_logits, dim=-1)
    vals, ids = logp.topk(k, dim=-1)
    tail = (1.0 - vals.exp().sum(-1)).clamp(min=0.0)
    return {"topk_ids": ids.to(torch.int32), "topk_logps": vals.to(dtype), "tail": tail.to(dtype)}


def logps_signal(t_logits, labels):
    return {"logps": F.log_softmax(t_logits, dim=-1).gather(-1, labels[:, None]).squeeze(-1)}


def dense_kl(p_logits, q_logits):
    """Row-wise KL(softmax(p) || softmax(q)) over the full vocabulary."""
    lp, lq = F.log_softmax(p_logits, -1), F.log_softmax(q_logits, -1)
    return (lp.exp() * (lp - lq)).sum(-1)


def with_logits(batch, side, logits):
    p = batch.policy[side]
    pol = dict(batch.policy)
    pol[side] = Packed(logits, p.labels, p.seg, p.n_seq)
    return LossBatch(policy=pol, signals=batch.signals, ref=batch.ref)


def seqsum(x, p):
    return torch.zeros(p.n_seq, dtype=x.dtype).index_add(0, p.seg, x)


def seqmean(x, p):
    return seqsum(x, p) / torch.bincount(p.seg, minlength=p.n_seq).to(x.dtype)


def tok_logp(p):
    return F.log_softmax(p.logits, -1).gather(-1, p.labels[:, None]).squeeze(-1)

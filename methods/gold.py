"""GOLD-style hybrid cross-tokenizer distillation (TRL's GOLDTrainer, `trl/experimental/gold/gold_trainer.py`: the
ULD loss with `use_extended_uld` (byte-offset alignment, "observed" token merging) and `uld_use_hybrid_loss`):

For each aligned span g (the characters between two boundaries both tokenizations share) both models' next-token
distributions at the span's first token are *merged* with the span's later tokens, as TRL's "observed" strategy
does: p̃_g(v) = p_T(v | s'_g) · Π_{later teacher tokens} p_T(y'), q̃_g(w) = q_θ(w | s_g) · Π_{later student tokens}
q_θ(y). Then

    loss = CE_w · CE(y_w) + mean_g [ w_m · JSD_β(p̃_g, q̃_g over matched bins) + w_u · UL1_g ]

- matched bins: the teacher's top-k tokens that have a student twin (the same bytes after each tokenizer's space
  marker is undone: `bench.modeling.alignment.vocab_map`; TRL matches equal token strings), compared id to id with
  the generalized JSD of GKD (TRL's `generalized_jsd_loss`: β = 0 forward KL(p̃||q̃), β = 1 KL(q̃||p̃), else
  β·KL(p̃||m) + (1−β)·KL(q̃||m), m = β·p̃ + (1−β)·q̃), on the merged (unnormalised) masses as TRL does;
- UL1_g: the sorted L1 (ULD) distance between the teacher's other top-k tokens and the student's tokens outside the
  matched bins, both sorted, plus |q̃_rest − p̃_rest| for the mass beyond them (the teacher's is its top-k tail);
- w_m = the share of the teacher vocabulary with a student twin, w_u = 1 − w_m (TRL's adaptive default), or fixed.

Top-k cache: TRL reads the teacher's full logits. Here the matched bins are the teacher's top-k twins and the
teacher's tail is one unmatched bin; with k covering the teacher vocabulary and one shared tokenizer the loss is
exactly TRL's generalized JSD over the whole vocabulary (tested against TRL's function). Defaults from TRL's
GOLDConfig: β = 0.5, CE weight 0 (uld_crossentropy_weight), adaptive hybrid weights; TRL trains on-policy
(λ, sampling); here the student trains on y_w (off-policy, like the other KD rows), teacher π_dpo by default.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from bench.method import LossBatch, Method, MethodConfig, SignalSpec, global_mean, setting
from bench.tensors import Packed, rowwise
from methods.sft import sft_loss
from methods.uld import TEACHERS


def _hybrid_student_rows(z: torch.Tensor, sids: torch.Tensor):
    """(log q at the matched student ids [c, k] (−inf where sids < 0), the student's top-k probabilities over the
    other tokens (sorted) [c, k], its mass beyond those [c])."""
    dt = torch.promote_types(z.dtype, torch.float32)
    logq = torch.log_softmax(z.to(dt), dim=-1)
    c, V = logq.shape
    valid = sids >= 0
    idx = torch.where(valid, sids.long(), torch.full_like(sids.long(), V))
    lq_ids = torch.cat([logq, logq.new_zeros(c, 1)], -1).gather(-1, idx).masked_fill(~valid, float("-inf"))
    other = torch.cat([logq, logq.new_zeros(c, 1)], -1).scatter(-1, idx, float("-inf"))[:, :V]
    k = sids.shape[-1]
    top = other.topk(min(k, V), dim=-1).values.exp()
    top = torch.nn.functional.pad(top, (0, k - top.shape[-1]))
    rest = (1.0 - lq_ids.exp().sum(-1) - top.sum(-1)).clamp(min=0.0)
    return lq_ids, top, rest


def generalized_jsd(logp: torch.Tensor, logq: torch.Tensor, beta: float) -> torch.Tensor:
    """Σ over bins of GKD's generalized JSD between (unnormalised) masses given as logs [N, B]; −inf = no bin."""
    p, q = logp.exp(), logq.exp()
    if beta == 0.0:
        return torch.where(p > 0, p * (logp - logq), torch.zeros_like(p)).sum(-1)
    if beta == 1.0:
        return torch.where(q > 0, q * (logq - logp), torch.zeros_like(q)).sum(-1)
    b = torch.tensor(beta, dtype=logp.dtype)
    logm = torch.logaddexp(logp + torch.log(b), logq + torch.log1p(-b))
    kl_p = torch.where(p > 0, p * (logp - logm), torch.zeros_like(p))
    kl_q = torch.where(q > 0, q * (logq - logm), torch.zeros_like(q))
    return (beta * kl_p + (1.0 - beta) * kl_q).sum(-1)


def group_later(token_logps: torch.Tensor, group: torch.Tensor, first: torch.Tensor, seg: torch.Tensor):
    """Per row: on a span's first row, Σ of the log-probs of the span's later rows (0 elsewhere)."""
    key = seg.long() * 1_000_000 + group.long()  # groups are numbered within each sequence
    in_group = group >= 0
    uniq, inv = torch.unique(torch.where(in_group, key, torch.full_like(key, -1)), return_inverse=True)
    total = torch.zeros(len(uniq), dtype=token_logps.dtype).index_add(0, inv, token_logps)
    own = torch.where(first, token_logps, torch.zeros_like(token_logps))
    return torch.where(first & in_group, total[inv] - own, torch.zeros_like(token_logps))


def gold_terms(packed: Packed, xtok: dict, beta: float, matched_weight: float | None, batch: LossBatch | None = None):
    """(mean hybrid distance over the spans, its matched part, its unmatched part); under the trainer a mean over
    the global step's spans."""
    first = xtok["first"].bool()
    sids = torch.where(first[:, None], xtok["topk_sids"].long(), torch.full_like(xtok["topk_sids"].long(), -1))
    lq_ids, q_top, q_rest = rowwise(packed, _hybrid_student_rows, sids)
    dt = lq_ids.dtype
    ls = group_later(packed.token_logps(), xtok["group"], first, packed.seg)  # student's later tokens
    lt = xtok["later"].to(dt)
    t_logps = torch.where(first[:, None], xtok["topk_logps"].to(dt), torch.full_like(lq_ids, float("-inf")))
    matched = sids >= 0
    logp_m = torch.where(matched, t_logps, torch.full_like(t_logps, float("-inf"))) + lt[:, None]
    logq_m = lq_ids + ls[:, None]
    jsd = generalized_jsd(logp_m, torch.where(matched, logq_m, torch.full_like(logq_m, float("-inf"))), beta)
    scale_t, scale_s = lt.exp(), ls.exp()
    p_u = torch.where(matched, torch.zeros_like(t_logps), t_logps.exp()).sort(-1, descending=True).values
    p_rest = (1.0 - t_logps.exp().sum(-1)).clamp(min=0.0)
    ul1 = ((q_top * scale_s[:, None] - p_u * scale_t[:, None]).abs().sum(-1)
           + (q_rest * scale_s - p_rest * scale_t).abs())
    w_m = xtok["match_share"].to(dt) if matched_weight is None else torch.full_like(lt, matched_weight)
    per = w_m * jsd + (1.0 - w_m) * ul1
    w = first.to(dt)
    n = w.sum() if batch is None else batch.stat("spans", w.sum().reshape(1)).sum()
    return global_mean(per * w, n, batch), (jsd * w).sum() / w.sum().clamp(min=1.0), \
        (ul1 * w).sum() / w.sum().clamp(min=1.0)


@dataclass
class GOLDConfig(MethodConfig):
    beta: float = setting(0.5, "TRL GOLDConfig.beta", "β of the generalized JSD on matched bins", min=0.0, max=1.0)
    ce_weight: float = setting(0.0, "TRL GOLDConfig.uld_crossentropy_weight", "weight of CE on y_w", min=0.0)
    matched_weight: float = setting(-1.0, "TRL (uld_hybrid_matched_weight=None: adaptive)",
                                    "w_m of the matched part (−1: the vocabulary overlap share; w_u = 1 − w_m)",
                                    min=-1.0, max=1.0)
    teacher: str = setting("dpo_teacher", "our choice (π_dpo; option π_ref)", "teacher whose top-k is distilled",
                           choices=TEACHERS)


class GOLD(Method):
    """Span-merged hybrid of JSD on shared tokens and sorted L1 on the rest (TRL GOLD's extended ULD)."""

    name = "gold"
    display_name = "GOLD-style"
    citation = "TRL GOLDTrainer (Hugging Face 2025), extended hybrid ULD"
    config_cls = GOLDConfig

    def sides(self, cfg):
        return ("chosen",)

    def signals(self, cfg):
        return [SignalSpec(cfg.teacher, "chosen", "xtok")]

    def step_stats(self, cfg, batch: LossBatch, lengths):
        return {"spans": batch.signal(cfg.teacher, "xtok", "chosen")["first"].bool().sum().reshape(1).double()}

    def loss(self, batch: LossBatch, cfg):
        packed = batch.policy["chosen"]
        weight = None if cfg.matched_weight < 0 else cfg.matched_weight
        dist, jsd, ul1 = gold_terms(packed, batch.signal(cfg.teacher, "xtok", "chosen"), cfg.beta, weight, batch)
        ce = sft_loss(packed, batch)
        return cfg.ce_weight * ce + dist, {"nll": ce.item(), "jsd": jsd.item(), "ul1": ul1.item()}

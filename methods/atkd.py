"""ATKD, adaptive teaching KD (Zhong, Ding, Shen, Liu, Du & Tao 2024, "Revisiting Knowledge Distillation for
Autoregressive Language Models", ACL 2024, §3; authors' code github.com/WHU-ZQH/ATKD, distill/distill_trainer.py,
`DistillTrainer.atkd` / `get_tckd_nckd`).

Forward KD at a token decomposes (the DKD identity, Zhao et al. 2022) as
    KL(p_T || q_θ) = TCKD + (1 − p_T(g))·NCKD,
    TCKD = KL([p_T(g), 1−p_T(g)] || [q_θ(g), 1−q_θ(g)])          target-oriented (binary gold vs not-gold)
    NCKD = KL(p̂_T || q̂_θ), p̂ = p restricted to v ≠ g, renormalised   diversity-oriented
with g = y_t the gold token. Teacher uncertainty u_t = 1 − p_T(y_t). Tokens with u_t below the batch median are
"easy", the rest "hard"; easy tokens get NCKD only, hard tokens TCKD + NCKD, and NCKD is NOT weighted by
(1 − p_T(g)) (that weight is what suppresses diversity learning on easy tokens):
    loss = λ·mean_easy NCKD + (1−λ)·mean_hard (TCKD + NCKD) + sft_weight·SFT(y_w),   λ = 0.2.

Verified against the authors' released code (not the paper PDF, which was not reachable): uncertainty = teacher
non-gold mass `pnt_tea`; split `easy = u < median(u)` over the batch's response tokens (torch lower median);
easy_loss = NCKD, hard_loss = TCKD + NCKD, `alpha*easy + (1-alpha)*hard` with alpha = 0.2 (its default); each part
a token mean over its own subset; `use_pnt=False` (no (1−p_T(g)) weight). Here "the batch" is the optimizer step's
global batch (every process and accumulation micro-batch: the median and both subset sizes come from `step_stats`),
so the split does not change with the number of processes; the authors' code splits each device's batch.
Differences: (1) the authors' ATKD loss has no SFT term — we add SFT(y_w) like the other KD baselines (`sft_weight=1`);
`sft_weight=0` reproduces the code. (2) The authors use full teacher logits; here the teacher is the cached
top-k signal plus its exact gold-token log-prob (a `logps` signal), so TCKD is exact and NCKD is computed over
bins {top-k ids ∖ g} ∪ {rest}, renormalised (exact when k = V−1; tested against dense full-vocabulary math).
The paper's "reverse" setting (student uncertainty, swapped roles) is not offered.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from bench.method import LossBatch, Method, MethodConfig, SignalSpec, global_mean, setting
from bench.tensors import Packed, rowwise, work_dtype
from methods.sft import sft_loss


def atkd_token_parts(logits, labels: torch.Tensor, topk_ids: torch.Tensor, topk_logps: torch.Tensor,
                     tail: torch.Tensor, gold_logp_t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-row (TCKD [N], NCKD [N], teacher uncertainty u = 1 − p_T(gold) [N]); logits: a Packed (chunked) or
    [N, V].

    Bins: the gold token; the teacher's top-k ids other than gold; the rest of the vocabulary. Teacher masses come
    from the top-k signal, the teacher's exact gold log-prob and the tail (rest = tail − p_T(gold) when gold is not
    in the top-k); student masses are exact from its full logits.
    """
    dt = work_dtype(logits)  # float32 at least: the cached teacher signals are never rounded down
    V = logits.vocab if isinstance(logits, Packed) else logits.shape[-1]
    ids = topk_ids.long()
    lab = labels.long()[:, None]
    in_top = ids == lab  # [N, k]
    gold_in_top = in_top.any(-1)
    has_rest = (ids.shape[-1] + (~gold_in_top).long()) < V
    # teacher (constants)
    with torch.no_grad():
        p_g = gold_logp_t.to(dt).exp().clamp(0.0, 1.0)
        p_top = topk_logps.to(dt).exp().masked_fill(in_top, 0.0)
        p_rest = (tail.to(dt) - torch.where(gold_in_top, torch.zeros_like(p_g), p_g)).clamp(min=0.0)
        p_rest = torch.where(has_rest, p_rest, torch.zeros_like(p_rest))
        p_not_g = (1.0 - p_g).clamp(min=0.0)
        z = (p_top.sum(-1) + p_rest).clamp(min=torch.finfo(dt).tiny)
        ph_top, ph_rest = p_top / z[:, None], p_rest / z
    tckd, nckd = rowwise(logits, _student_parts, lab, ids, in_top, has_rest, p_g, p_not_g, ph_top, ph_rest)
    return tckd, nckd, (1.0 - p_g)


def _student_parts(logits, lab, ids, in_top, has_rest, p_g, p_not_g, ph_top, ph_rest):
    """(TCKD, NCKD) of a chunk of student rows against the teacher's bin masses (see `atkd_token_parts`)."""
    dt = work_dtype(logits)
    logits = logits.to(dt)
    neg = torch.finfo(dt).min / 2  # finite "minus infinity": keeps empty-set logsumexps differentiable
    lse = torch.logsumexp(logits, dim=-1)
    logq_g = logits.gather(-1, lab).squeeze(-1) - lse
    logq_ng_bins = logits.gather(-1, ids) - lse[:, None]
    logq_not_g = torch.logsumexp(logits.scatter(-1, lab, neg), dim=-1) - lse  # log(1 − q_g)
    rest_logits = logits.scatter(-1, ids, neg).scatter(-1, lab, neg)
    logq_rest = torch.logsumexp(rest_logits, dim=-1) - lse
    # TCKD: binary KL
    tckd = (torch.xlogy(p_g, p_g) - p_g * logq_g) + (torch.xlogy(p_not_g, p_not_g) - p_not_g * logq_not_g)
    # NCKD: KL over the renormalised non-gold bins; the student's bins are renormalised by 1 − q_g
    logqh_top = torch.where(in_top, torch.zeros_like(logq_ng_bins), logq_ng_bins - logq_not_g[:, None])
    logqh_rest = torch.where(has_rest, logq_rest - logq_not_g, torch.zeros_like(logq_rest))
    nckd = (torch.xlogy(ph_top, ph_top) - ph_top * logqh_top).sum(-1) + \
        torch.where(has_rest, torch.xlogy(ph_rest, ph_rest) - ph_rest * logqh_rest, torch.zeros_like(logq_rest))
    return tckd, nckd


def atkd_split(u: torch.Tensor) -> torch.Tensor:
    """Easy-token mask: teacher uncertainty strictly below the batch median (authors' code: `pnt_tea < median`)."""
    return u < u.median()


def teacher_uncertainty(gold_logp_t: torch.Tensor) -> torch.Tensor:
    """u = 1 − p_T(gold) per row, in float64 (the split and its global counts compare the same numbers)."""
    return 1.0 - gold_logp_t.double().exp().clamp(0.0, 1.0)


def atkd_kd_loss(tckd: torch.Tensor, nckd: torch.Tensor, easy: torch.Tensor, lam: float,
                 batch: LossBatch | None = None, n_easy=None, n_hard=None) -> torch.Tensor:
    """λ·mean_easy(NCKD) + (1−λ)·mean_hard(TCKD + NCKD); an empty subset contributes 0. Under the trainer the
    subsets are the global step's (`n_easy`, `n_hard`: their sizes there)."""
    hard = ~easy
    l_easy = global_mean(nckd[easy], n_easy, batch)
    l_hard = global_mean((tckd + nckd)[hard], n_hard, batch)
    return lam * l_easy + (1.0 - lam) * l_hard


@dataclass
class ATKDConfig(MethodConfig):
    lam: float = setting(0.2, "ATKD authors' code (distill_trainer.py default alpha=0.2)", "weight λ of the easy-token loss "
                         "(1−λ on hard tokens)", min=0.0, max=1.0)
    sft_weight: float = setting(1.0, "our choice (+SFT, like the other KD baselines); authors' code has none (0)", "weight of SFT(y_w)", min=0.0)
    teacher: str = setting("dpo_teacher", "our choice (as VanillaKD: π_dpo; option π_ref)", "teacher model",
                           choices=("dpo_teacher", "ref_teacher"))


class ATKD(Method):
    """Adaptive teaching KD: diversity-only KD on easy tokens, target + diversity KD on hard tokens."""

    name = "atkd"
    display_name = "ATKD"
    citation = "Zhong et al. 2024, Revisiting Knowledge Distillation for Autoregressive Language Models (ACL)"
    config_cls = ATKDConfig

    def sides(self, cfg):
        return ("chosen",)

    def signals(self, cfg):
        return [SignalSpec(cfg.teacher, "chosen", "topk"), SignalSpec(cfg.teacher, "chosen", "logps")]

    def step_stats(self, cfg, batch: LossBatch, lengths):
        return {"u": teacher_uncertainty(batch.signal(cfg.teacher, "logps", "chosen")["logps"])}

    def loss(self, batch: LossBatch, cfg):
        p: Packed = batch.policy["chosen"]
        topk = batch.signal(cfg.teacher, "topk", "chosen")
        gold = batch.signal(cfg.teacher, "logps", "chosen")["logps"]
        tckd, nckd, _ = atkd_token_parts(p, p.labels, topk["topk_ids"], topk["topk_logps"], topk["tail"], gold)
        u = teacher_uncertainty(gold)
        u_all = batch.stat("u", u)  # the median splits the global step's tokens, not one process's
        median = u_all.median()
        easy = u < median
        n_easy = int((u_all < median).sum())
        kd = atkd_kd_loss(tckd, nckd, easy, cfg.lam, batch, n_easy, u_all.numel() - n_easy)
        sft = sft_loss(p, batch)
        return sft * cfg.sft_weight + kd, {"nll": sft.item(), "kd": kd.item(), "tckd": tckd.mean().item(),
                                           "nckd": nckd.mean().item(), "easy_frac": easy.float().mean().item()}

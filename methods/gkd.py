"""GKD, generalised KD (Agarwal et al. 2024, "On-Policy Distillation of Language Models: Learning from
Self-Generated Mistakes", ICLR 2024, eq. 1 and Algorithm 1).

Per token, the generalised Jensen–Shannon divergence between teacher P = π_T(·|s_t) and student Q = π_θ(·|s_t):

    JSD_b(P || Q) = b·KL(P || M) + (1−b)·KL(Q || M),   M = b·P + (1−b)·Q,
    with the endpoints b = 0 → forward KL(P || Q), b = 1 → reverse KL(Q || P)   (TRL's convention).

Computed over the k+1 bins of the cached teacher top-k signal (teacher top-k probs + tail; the student's probs at
those ids + its remaining mass), exactly equal to the full-vocabulary value when k = V−1 (tested against TRL's
`GKDTrainer.generalized_jsd_loss`, the independent oracle). Teacher π_dpo by default (option π_ref); temperature 1
(TRL's compute_loss also calls the loss at temperature 1).

Data mix. GKD trains on dataset responses and, with probability λ per step, on fresh student samples. Here the
student samples are ONE stored greedy pass of the SFT student over the training prompts ("gen:sft_student"; not
regenerated from the current student — a deviation shared with ADPA's rollouts), and both sides are present for
every prompt of a batch. `mix` says how each batch is combined:
  * "weighted" (default): loss = (1−λ)·mean_t JSD on the dataset responses y_w + λ·mean_t JSD on the rollouts,
    each a token mean over its own side. This is the expectation of TRL's per-step coin flip
    (`random.random() <= lmbda` → whole batch on-policy), deterministically, using every computed row.
  * "split": of the batch's B prompts, the last n = floor(λ·B + 0.5) use their rollout and the first B−n their
    dataset response; one token mean over the selected rows (the other rows get zero weight). B is each process's
    micro-batch: unlike the default, "split" changes with the number of processes and accumulation micro-batches.
With λ = 0 only "chosen" is declared, with λ = 1 only the rollouts.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from bench.method import LossBatch, Method, MethodConfig, SignalSpec, setting, token_mean
from bench.tensors import Packed, sparse_kl, student_bins, work_dtype

ROLLOUTS = "gen:sft_student"


def generalized_jsd_bins(logq: torch.Tensor, logp: torch.Tensor, p: torch.Tensor, beta: float) -> torch.Tensor:
    """JSD_b over bins from student log-probs `logq`, teacher log-probs `logp` and teacher probs `p` [N, B] → [N].

    `p` is passed separately so a zero-mass teacher bin contributes exactly 0 (its log is clamped finite).
    """
    if beta <= 0.0 or beta >= 1.0:
        raise ValueError("use the KL endpoints for beta in {0, 1}")
    q = logq.exp()
    logm = torch.logsumexp(torch.stack([logq + math.log1p(-beta), logp + math.log(beta)]), dim=0)
    kl_pm = (torch.xlogy(p, p) - p * logm).sum(-1)
    kl_qm = torch.where(q > 0, q * (logq - logm), torch.zeros_like(q)).sum(-1)  # empty student tail (k = V) → 0
    return beta * kl_pm + (1.0 - beta) * kl_qm


def gkd_token_loss(logits, topk_ids: torch.Tensor, topk_logps: torch.Tensor, tail: torch.Tensor,
                   beta: float) -> torch.Tensor:
    """Per-row generalised JSD between the cached teacher top-k (+tail) and the student rows [N] (logits: a
    Packed, chunked, or [N, V])."""
    dt = work_dtype(logits)  # float32 at least: a bf16 policy never rounds the cached teacher signals down
    topk_logps, tail = topk_logps.to(dt), tail.to(dt)
    if beta == 0.0:
        return sparse_kl(logits, topk_ids, topk_logps, tail)
    if beta == 1.0:
        return sparse_kl(logits, topk_ids, topk_logps, tail, reverse=True)
    logq_k, logq_tail = student_bins(logits, topk_ids)
    logq_tail = logq_tail.clamp(min=torch.finfo(dt).min)  # k = V: empty tail, keep it finite for the gradient
    logq = torch.cat([logq_k, logq_tail[:, None]], dim=-1)
    p_tail = tail.clamp(min=0.0)
    p = torch.cat([topk_logps.exp(), p_tail[:, None]], dim=-1)
    logp = torch.cat([topk_logps, torch.log(p_tail.clamp(min=torch.finfo(dt).tiny))[:, None]], dim=-1)
    return generalized_jsd_bins(logq, logp, p, beta)


def gkd_mix(data_tok: torch.Tensor | None, data_seg: torch.Tensor | None, gen_tok: torch.Tensor | None,
            gen_seg: torch.Tensor | None, n_seq: int, lmbda: float, mix: str, batch: LossBatch | None = None
            ) -> torch.Tensor:
    """Combine per-token losses of the dataset side and the rollout side of one batch (see module docstring); the
    token means are over the global step's tokens under the trainer's `batch` ("split" selects within each
    process's micro-batch)."""
    if data_tok is None:
        return token_mean(gen_tok, ROLLOUTS, batch)
    if gen_tok is None:
        return token_mean(data_tok, "chosen", batch)
    if mix == "weighted":
        return (1.0 - lmbda) * token_mean(data_tok, "chosen", batch) + lmbda * token_mean(gen_tok, ROLLOUTS, batch)
    if mix == "split":
        n_gen = int(math.floor(lmbda * n_seq + 0.5))
        cut = n_seq - n_gen  # sequences b >= cut use the rollout
        sel = torch.cat([data_tok[data_seg < cut], gen_tok[gen_seg >= cut]])
        return sel.mean() if sel.numel() else data_tok.sum() * 0.0
    raise ValueError(f"unknown mix {mix!r}")


@dataclass
class GKDConfig(MethodConfig):
    beta: float = setting(0.5, "TRL GKDConfig.beta default", "JSD interpolation b (0 = forward KL, "
                          "1 = reverse KL)", min=0.0, max=1.0)
    lmbda: float = setting(0.5, "TRL GKDConfig.lmbda default", "student-rollout fraction λ",
                           min=0.0, max=1.0)
    mix: str = setting("weighted", "our choice (expectation of TRL's per-step coin flip)", "how a batch mixes "
                       "dataset responses and rollouts: weighted | split", choices=("weighted", "split"))
    teacher: str = setting("dpo_teacher", "our choice (as VanillaKD: π_dpo; option π_ref)", "teacher model",
                           choices=("dpo_teacher", "ref_teacher"))


def _gkd_sides(cfg) -> tuple[str, ...]:
    if cfg.lmbda <= 0.0:
        return ("chosen",)
    if cfg.lmbda >= 1.0:
        return (ROLLOUTS,)
    return ("chosen", ROLLOUTS)


class GKD(Method):
    """Generalised (JSD) KD on a mix of dataset responses and stored student rollouts."""

    name = "gkd"
    display_name = "GKD"
    citation = "Agarwal et al. 2024, On-Policy Distillation of Language Models (ICLR)"
    config_cls = GKDConfig

    def sides(self, cfg):
        return _gkd_sides(cfg)

    def signals(self, cfg):
        return [SignalSpec(cfg.teacher, side, "topk") for side in _gkd_sides(cfg)]

    def loss(self, batch: LossBatch, cfg):
        per_side, metrics = {}, {}
        for side in _gkd_sides(cfg):
            p: Packed = batch.policy[side]
            t = batch.signal(cfg.teacher, "topk", side)
            tok = gkd_token_loss(p, t["topk_ids"], t["topk_logps"], t["tail"], cfg.beta)
            per_side[side] = (tok, p.seg, p.n_seq)
            metrics["jsd_" + ("data" if side == "chosen" else "rollout")] = tok.mean().item()
        d = per_side.get("chosen", (None, None, None))
        g = per_side.get(ROLLOUTS, (None, None, None))
        n_seq = d[2] if d[2] is not None else g[2]
        loss = gkd_mix(d[0], d[1], g[0], g[1], n_seq, cfg.lmbda, cfg.mix, batch)
        return loss, metrics

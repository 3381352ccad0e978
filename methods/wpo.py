"""WPO (Zhou et al. 2024, "WPO: Enhancing RLHF with Weighted Preference Optimization", EMNLP 2024; the pair
weight of its eq. 2 — as TRL cites it — with the sampling-probability ("sampled alignment") normalisation):
the DPO loss of each pair times

    w = sg(min(1, exp(m_w + m_l))),   m(y) = mean_t [log π_θ(y_t|s_t) − log Σ_v π_θ(v|s_t)²].

m is the length-normalised log-prob of the response with each token's probability divided by the expected
probability of a token sampled from π_θ itself, so a response the current policy would plausibly generate weighs
~1 and an off-policy one is down-weighted. The weight is a constant (no gradient). The frozen reference π_sref
enters only through the DPO term, via the cached `reference.logps.*` signals.

Deviation options: `clamp_weight=False` drops the min(1, ·) clamp, which is exactly TRL's DPOTrainer
`use_weighting=True` computation (TRL 1.16 multiplies the per-pair loss by exp(m_w)·exp(m_l) without a clamp);
tests/method_losses/test_trl_oracles.py checks the unclamped weights and loss against that trainer.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from bench.method import LossBatch, Method, MethodConfig, setting
from bench.tensors import Packed, rowwise, seg_mean, work_dtype
from methods.dpo import REF_LOGPS, dpo_loss, sequence_logps


def _log_sum_sq_probs(z: torch.Tensor) -> torch.Tensor:
    z = z.to(work_dtype(z))
    return torch.logsumexp(2 * z, dim=-1) - 2 * torch.logsumexp(z, dim=-1)


def log_sum_sq_probs(logits) -> torch.Tensor:
    """log Σ_v softmax(logits)_v² per row, stably: logsumexp(2z) − 2·logsumexp(z), in work dtype (logits: a
    Packed, chunked, or [N, V])."""
    return rowwise(logits, _log_sum_sq_probs)[0]


def wpo_log_weight(packed: Packed) -> torch.Tensor:
    """Per-sequence m(y) = mean_t[log π(y_t|s_t) − log Σ_v π(v|s_t)²]  [n_seq], detached."""
    with torch.no_grad():
        aligned = packed.token_logps() - log_sum_sq_probs(packed)
        return seg_mean(aligned, packed.seg, packed.n_seq)


def wpo_weights(m_w: torch.Tensor, m_l: torch.Tensor, clamp: bool = True) -> torch.Tensor:
    """Pair weight exp(m_w + m_l), clamped at 1 unless `clamp` is False (TRL's use_weighting)."""
    w = torch.exp(m_w + m_l)
    return w.clamp(max=1.0) if clamp else w


@dataclass
class WPOConfig(MethodConfig):
    beta: float = setting(0.05, "our choice (the project's DPO β)", "DPO inverse temperature β", min=0.0)
    clamp_weight: bool = setting(True, "our choice (a weight ≤ 1)", "clamp the pair weight at 1 (False = TRL's "
                                 "use_weighting, which does not clamp)")


class WPO(Method):
    """Weighted preference optimisation: DPO with on-policy-likelihood pair weights."""

    name = "wpo"
    display_name = "WPO"
    citation = "Zhou et al. 2024, WPO: Enhancing RLHF with Weighted Preference Optimization (EMNLP)"
    config_cls = WPOConfig

    def sides(self, cfg):
        return ("chosen", "rejected")

    def signals(self, cfg):
        return list(REF_LOGPS)

    def loss(self, batch: LossBatch, cfg):
        pi_w, ref_w = sequence_logps(batch, "chosen")
        pi_l, ref_l = sequence_logps(batch, "rejected")
        w = wpo_weights(wpo_log_weight(batch.policy["chosen"]), wpo_log_weight(batch.policy["rejected"]),
                        cfg.clamp_weight)
        losses = dpo_loss(pi_w, pi_l, ref_w, ref_l, cfg.beta) * w
        margin = ((pi_w - ref_w) - (pi_l - ref_l)).detach()
        return losses.mean(), {"reward_acc": (margin > 0).float().mean().item(), "margin": margin.mean().item(),
                               "weight": w.mean().item()}

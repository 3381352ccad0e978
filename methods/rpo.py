"""RPO (Pang et al. 2024, "Iterative Reasoning Preference Optimization", Eq. 1): DPO plus a length-normalised
negative log-likelihood of the chosen response,

    L = −log σ(β[(log π_θ − log π_ref)(y_w) − (log π_θ − log π_ref)(y_l)]) − α · log π_θ(y_w | x) / |y_w|,

averaged over pairs. The NLL term keeps the chosen side's likelihood from falling while the margin grows (plain
DPO lowers both). The paper normalises each response's NLL by its length and averages over pairs (the default,
`nll_mean: response`); TRL (`DPOConfig(loss_type=["sigmoid", "sft"], loss_weights=[1, α])`, formerly `rpo_alpha`)
takes one token mean over all chosen tokens of the batch instead (`nll_mean: tokens`, checked against TRL's own
`DPOTrainer._compute_loss` in tests/method_losses/test_trl_oracles.py).
"""
from __future__ import annotations

from dataclasses import dataclass

from bench.method import LossBatch, Method, MethodConfig, global_mean, setting
from methods.dpo import REF_LOGPS, dpo_loss, sequence_logps


def rpo_loss(pi_w, pi_l, ref_w, ref_l, len_w, beta: float, alpha: float, nll_mean: str = "response",
             batch: LossBatch | None = None):
    """RPO loss of a batch from sequence log-probs (sums over response tokens) and chosen lengths (tokens): the
    mean DPO loss plus α times the chosen side's NLL, per response (`response`) or over the batch's tokens (over
    the global step's under the trainer's `batch`)."""
    if nll_mean == "response":
        nll = (-pi_w / len_w).mean()
    else:
        alone = batch is None or batch.norm is None
        nll = global_mean(-pi_w, len_w.sum() if alone else batch.norm.count("tokens:chosen"), batch)
    return dpo_loss(pi_w, pi_l, ref_w, ref_l, beta).mean() + alpha * nll


@dataclass
class RPOConfig(MethodConfig):
    beta: float = setting(0.1, "our choice (the embedded DPO teacher's β)", "inverse temperature β", min=0.0)
    alpha: float = setting(1.0, "Pang et al. 2024 Eq. 1 (α = 1, as TRL's docs recommend for rpo_alpha)",
                           "weight α of the chosen side's length-normalised NLL", min=0.0)
    nll_mean: str = setting("response", "Pang et al. 2024 Eq. 1 (per-response length normalisation); 'tokens' = TRL",
                            "how the NLL is averaged: per response then over pairs, or over the batch's tokens",
                            choices=("response", "tokens"))


class RPO(Method):
    """DPO with an NLL term on the chosen response."""

    name = "rpo"
    display_name = "RPO"
    citation = "Pang et al. 2024"
    config_cls = RPOConfig

    def sides(self, cfg):
        return ("chosen", "rejected")

    def signals(self, cfg):
        return list(REF_LOGPS)

    def loss(self, batch: LossBatch, cfg):
        pi_w, ref_w = sequence_logps(batch, "chosen")
        pi_l, ref_l = sequence_logps(batch, "rejected")
        len_w = batch.policy["chosen"].lengths().to(pi_w.dtype)
        loss = rpo_loss(pi_w, pi_l, ref_w, ref_l, len_w, cfg.beta, cfg.alpha, cfg.nll_mean, batch)
        margin = (pi_w - ref_w) - (pi_l - ref_l)
        return loss, {"reward_acc": (margin > 0).float().mean().item(), "margin": margin.mean().item(),
                      "nll": (-pi_w / len_w).mean().item()}

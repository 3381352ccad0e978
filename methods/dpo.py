"""DPO (Rafailov et al. 2023): −log σ(β[(log π_θ − log π_ref)(y_w) − (log π_θ − log π_ref)(y_l)]).

π_ref is the frozen reference: the SFT student when training a student, the SFT teacher when training the DPO
teacher. Its sequence log-probs are a cached signal (`reference.logps.*`), so a DPO step costs one policy pass.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from bench.method import LossBatch, Method, MethodConfig, SignalSpec, setting
from bench.tensors import seg_sum


def dpo_loss(pi_w, pi_l, ref_w, ref_l, beta: float) -> torch.Tensor:
    """Per-pair DPO loss from sequence log-probs (sums over response tokens)."""
    return -F.logsigmoid(beta * ((pi_w - ref_w) - (pi_l - ref_l)))


def sequence_logps(batch: LossBatch, side: str, model: str = "reference"):
    """(policy, frozen-model) sequence log-probs of one side, summed over response tokens."""
    p = batch.policy[side]
    pi = seg_sum(p.token_logps(), p.seg, p.n_seq)
    ref = seg_sum(batch.signal(model, "logps", side)["logps"].to(pi.dtype), p.seg, p.n_seq)
    return pi, ref


REF_LOGPS = [SignalSpec("reference", "chosen", "logps"), SignalSpec("reference", "rejected", "logps")]


@dataclass
class DPOConfig(MethodConfig):
    beta: float = setting(0.05, "seed papers' DPO-teacher setting (METHODS.md)", "inverse temperature β", min=0.0)


class DPO(Method):
    """Direct preference optimisation against the frozen reference."""

    name = "dpo"
    display_name = "DPO"
    citation = "Rafailov et al. 2023"
    config_cls = DPOConfig

    def sides(self, cfg):
        return ("chosen", "rejected")

    def signals(self, cfg):
        return list(REF_LOGPS)

    def loss(self, batch: LossBatch, cfg):
        pi_w, ref_w = sequence_logps(batch, "chosen")
        pi_l, ref_l = sequence_logps(batch, "rejected")
        losses = dpo_loss(pi_w, pi_l, ref_w, ref_l, cfg.beta)
        margin = (pi_w - ref_w) - (pi_l - ref_l)
        return losses.mean(), {"reward_acc": (margin > 0).float().mean().item(), "margin": margin.mean().item()}

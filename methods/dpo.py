"""DPO (Rafailov et al. 2023): −log σ(β[(log π_θ − log π_ref)(y_w) − (log π_θ − log π_ref)(y_l)]).

π_ref is the frozen reference: the SFT student when training a student, the SFT teacher when training the DPO
teacher. Its sequence log-probs are a cached signal (`reference.logps.*`), so a DPO step costs one policy pass.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from bench.method import LossBatch, Method, MethodConfig, SignalSpec, setting
from bench.tensors import seg_sum, work_dtype


def dpo_loss(pi_w, pi_l, ref_w, ref_l, beta: float) -> torch.Tensor:
    """Per-pair DPO loss from sequence log-probs (sums over response tokens)."""
    return -F.logsigmoid(beta * ((pi_w - ref_w) - (pi_l - ref_l)))


def sequence_logps(batch: LossBatch, side: str, model: str = "reference"):
    """(policy, frozen-model) sequence log-probs of one side, summed over response tokens in work dtype (float32 at
    least: a bfloat16 policy never rounds the cached float32 reference down; near −300 nats bf16's spacing is 2)."""
    p = batch.policy[side]
    return p.sequence_logps(), frozen_sequence_logps(batch, model, side)


def frozen_sequence_logps(batch: LossBatch, model: str, side: str):
    """A cached `logps` signal summed per sequence of `side`, in the wider of the policy's and the signal's dtype
    (float32 at least): never cast down, and accumulated in float64 next to a float64 policy."""
    p = batch.policy[side]
    logps = batch.signal(model, "logps", side)["logps"]
    return seg_sum(logps.to(work_dtype(p, logps)), p.seg, p.n_seq)


REF_LOGPS = [SignalSpec("reference", "chosen", "logps"), SignalSpec("reference", "rejected", "logps")]


@dataclass
class DPOConfig(MethodConfig):
    beta: float = setting(0.05, "our choice (the project's DPO-teacher β); the TVKD authors' teacher recipe uses "
                          "0.01 (teacher_dpo.yaml)", "inverse temperature β", min=0.0)


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

"""SimPO (Meng, Xia & Chen 2024, "SimPO: Simple Preference Optimization with a Reference-Free Reward",
NeurIPS 2024): −log σ((β/|y_w|)·log π_θ(y_w|x) − (β/|y_l|)·log π_θ(y_l|x) − γ).

Reference-free: the implicit reward is the length-normalised (token-mean) log-likelihood scaled by β, and γ is a
target reward margin. No SFT term (TRL's CPOTrainer with loss_type="simpo", cpo_alpha=0, label_smoothing=0 is
the same loss; tests/method_losses/test_trl_oracles.py checks it against that trainer's own call path).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from bench.method import LossBatch, Method, MethodConfig, setting
from bench.tensors import Packed, seg_mean


def mean_logps(packed: Packed) -> torch.Tensor:
    """Per-sequence token-mean log-prob ℓ̄(y) = log π_θ(y|x)/|y|  [n_seq]."""
    return seg_mean(packed.token_logps(), packed.seg, packed.n_seq)


def simpo_loss(avg_w: torch.Tensor, avg_l: torch.Tensor, beta: float, gamma: float) -> torch.Tensor:
    """Per-pair SimPO loss from length-normalised sequence log-probs."""
    return -F.logsigmoid(beta * avg_w - beta * avg_l - gamma)


@dataclass
class SimPOConfig(MethodConfig):
    beta: float = setting(2.0, "SimPO authors' code (training_configs/llama-3-8b-base-simpo.yaml: beta 2.0)", "reward scale β", min=0.0)
    gamma: float = setting(1.0, "SimPO authors' code (same config: gamma_beta_ratio 0.5, γ = 0.5·β)", "target reward margin γ", min=0.0)


class SimPO(Method):
    """SimPO: reference-free, length-normalised preference optimisation with a target margin."""

    name = "simpo"
    display_name = "SimPO"
    citation = "Meng, Xia & Chen 2024, SimPO: Simple Preference Optimization with a Reference-Free Reward (NeurIPS)"
    config_cls = SimPOConfig

    def sides(self, cfg):
        return ("chosen", "rejected")

    def signals(self, cfg):
        return []

    def loss(self, batch: LossBatch, cfg):
        avg_w, avg_l = mean_logps(batch.policy["chosen"]), mean_logps(batch.policy["rejected"])
        losses = simpo_loss(avg_w, avg_l, cfg.beta, cfg.gamma)
        margin = (avg_w - avg_l).detach()
        return losses.mean(), {"reward_acc": (margin > 0).float().mean().item(),
                               "margin": (cfg.beta * margin).mean().item()}

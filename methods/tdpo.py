"""TDPO (Zeng et al. 2024, "Token-level Direct Preference Optimization", ICML 2024; TDPO2 by default).

    u = β[(log π_θ/π_sref)(y_w) − (log π_θ/π_sref)(y_l)]
    D(y) = Σ_t KL(π_sref(·|s_t) || π_θ(·|s_t))                  (sequential KL, full vocabulary)
    TDPO2: δ = β·α·[D(y_l) − sg(D(y_w))]      TDPO1: δ = β·[D(y_l) − D(y_w)]
    loss = −log σ(u − δ)

The per-token KL needs the frozen student reference's full next-token distributions, which no k-sparse cache can
give, so this plugin runs the reference ONLINE (`reference()` returns "online"): `batch.ref[side]` holds π_sref's
logits for the same rows as `batch.policy[side]`. The reference's sequence log-probs are taken from that same
online pass, so TDPO declares no cached signal. Checked against public copies of the authors' released
`tdpo_loss` (defaults α=0.5, `if_tdpo2=True`): logits = margin − α·(D_l − D_w.detach()), loss −logσ(β·logits),
per-position KL Σ_v π_ref·(log π_ref − log π_θ) — the same quantity as above.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from bench.method import LossBatch, Method, MethodConfig, setting
from bench.tensors import Packed, full_kl, seg_sum


def sequence_kl(ref_logits, logits, seg: torch.Tensor, n: int) -> torch.Tensor:
    """D(y) = Σ_t KL(π_ref(·|s_t) || π_θ(·|s_t)) per sequence [n] (full-vocabulary KL, ref constant; Packed rows
    are evaluated chunk by chunk, both models' logits one chunk at a time)."""
    return seg_sum(full_kl(ref_logits, logits), seg, n)


def tdpo_loss(pi_w, pi_l, ref_w, ref_l, kl_w, kl_l, beta: float, alpha: float = 0.5,
              variant: str = "tdpo2") -> torch.Tensor:
    """Per-pair TDPO loss from sequence log-probs and sequential KLs."""
    u = beta * ((pi_w - ref_w) - (pi_l - ref_l))
    if variant == "tdpo2":
        delta = beta * alpha * (kl_l - kl_w.detach())
    elif variant == "tdpo1":
        delta = beta * (kl_l - kl_w)
    else:
        raise ValueError(f"unknown TDPO variant {variant!r}")
    return -F.logsigmoid(u - delta)


def _side_terms(batch: LossBatch, side: str):
    p: Packed = batch.policy[side]
    r: Packed = batch.ref[side]
    pi = p.sequence_logps()
    with torch.no_grad():
        ref = r.sequence_logps()
    kl = sequence_kl(r, p, p.seg, p.n_seq)
    return pi, ref, kl


@dataclass
class TDPOConfig(MethodConfig):
    beta: float = setting(0.1, "our choice (a common DPO β)", "inverse temperature β", min=0.0)
    alpha: float = setting(0.5, "TDPO authors' code (tdpo_loss default alpha=0.5)", "weight α of the sequential-KL term "
                           "(TDPO2 only)", min=0.0)
    variant: str = setting("tdpo2", "TDPO authors' code default (if_tdpo2=True)", "tdpo2: α-weighted KL gap with sg on D(y_w); tdpo1: "
                           "unweighted, no stop-gradient", choices=("tdpo2", "tdpo1"))


class TDPO(Method):
    """Token-level DPO: DPO margin minus a sequential-KL gap to the (online) frozen student reference."""

    name = "tdpo"
    display_name = "TDPO"
    citation = "Zeng et al. 2024, Token-level Direct Preference Optimization (ICML)"
    config_cls = TDPOConfig

    def sides(self, cfg):
        return ("chosen", "rejected")

    def signals(self, cfg):
        return []

    def reference(self, cfg):
        return "online"

    def loss(self, batch: LossBatch, cfg):
        pi_w, ref_w, kl_w = _side_terms(batch, "chosen")
        pi_l, ref_l, kl_l = _side_terms(batch, "rejected")
        losses = tdpo_loss(pi_w, pi_l, ref_w, ref_l, kl_w, kl_l, cfg.beta, cfg.alpha, cfg.variant)
        margin = ((pi_w - ref_w) - (pi_l - ref_l)).detach()
        return losses.mean(), {"reward_acc": (margin > 0).float().mean().item(), "margin": margin.mean().item(),
                               "seq_kl_chosen": kl_w.mean().item(), "seq_kl_rejected": kl_l.mean().item()}

"""PLaD (Zhang et al. 2024, "PLaD: Preference-based Large Language Model Distillation with Pseudo-Preference
Pairs", Findings of ACL 2024): a margin ("calibration") ranking loss on the student's length-normalised
sequence log-likelihood, plus SFT:

    loss = sft_weight·SFT(y+) + mean_pairs max(0, δ − ℓ̄_θ(y+) + ℓ̄_θ(y−)),   ℓ̄_θ(y) = log π_θ(y|x)/|y|.

Default (our choice): true preference pairs, y+ = y_w, y− = y_l, δ = 1.0, SFT weight 1. The paper's own setting
builds pseudo-preference pairs from the teacher–student capacity gap (teacher output ≻ student output):
`pairs="pseudo"` uses y+ = the teacher's stored greedy generation ("gen:<teacher>") and y− = the SFT student's
("gen:sft_student"); SFT is then on y+. This formula is approximate: it could not be checked
against the paper text or code here (no copy reachable; no public code found in the indexed sources); it matches
our recollection of the paper's margin calibration loss on length-normalised scores. No teacher signal is read.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from bench.method import LossBatch, Method, MethodConfig, setting
from bench.tensors import Packed, seg_mean
from methods.sft import sft_loss


def plad_calibration_loss(avg_pos: torch.Tensor, avg_neg: torch.Tensor, delta: float) -> torch.Tensor:
    """Per-pair hinge max(0, δ − ℓ̄(y+) + ℓ̄(y−))."""
    return torch.relu(delta - avg_pos + avg_neg)


def _avg(p: Packed) -> torch.Tensor:
    return seg_mean(p.token_logps(), p.seg, p.n_seq)


@dataclass
class PLaDConfig(MethodConfig):
    delta: float = setting(1.0, "our choice (PLaD's own δ could not be checked)", "margin δ of the calibration hinge", min=0.0)
    sft_weight: float = setting(1.0, "our choice", "weight of SFT on the preferred response", min=0.0)
    pairs: str = setting("true", "our choice (dataset pairs); 'pseudo' = the paper's teacher-vs-student pairs",
                         "which pairs: dataset chosen/rejected, or teacher generation ≻ student generation",
                         choices=("true", "pseudo"))
    teacher: str = setting("dpo_teacher", "our choice (pseudo pairs only)", "teacher whose generations are y+ "
                           "when pairs='pseudo'", choices=("dpo_teacher", "ref_teacher"))


def _pair_sides(cfg) -> tuple[str, str]:
    return ("chosen", "rejected") if cfg.pairs == "true" else (f"gen:{cfg.teacher}", "gen:sft_student")


class PLaD(Method):
    """Preference-based distillation: SFT plus a length-normalised likelihood margin (calibration) loss."""

    name = "plad"
    display_name = "PLaD"
    citation = "Zhang et al. 2024, PLaD: Preference-based LLM Distillation with Pseudo-Preference Pairs (ACL Findings)"
    config_cls = PLaDConfig

    def sides(self, cfg):
        return _pair_sides(cfg)

    def signals(self, cfg):
        return []

    def loss(self, batch: LossBatch, cfg):
        pos, neg = _pair_sides(cfg)
        avg_pos, avg_neg = _avg(batch.policy[pos]), _avg(batch.policy[neg])
        cal = plad_calibration_loss(avg_pos, avg_neg, cfg.delta).mean()
        sft = sft_loss(batch.policy[pos], batch, pos)
        margin = (avg_pos - avg_neg).detach()
        return cfg.sft_weight * sft + cal, {"nll": sft.item(), "calibration": cal.item(),
                                            "margin": margin.mean().item(),
                                            "reward_acc": (margin > 0).float().mean().item()}

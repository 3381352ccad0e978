"""DDPO, reward-model distillation (Fisch et al. 2024, "Robust Preference Optimization through Reward Model
Distillation", the squared-loss reward-distillation objective): regress the student's implicit reward margin
onto a teacher reward margin,

    loss = (β[(log π_θ/π_sref)(y_w) − (log π_θ/π_sref)(y_l)] − [r_T(y_w) − r_T(y_l)])²,
    r_T(y) = β_T·log(π_dpo(y|x)/π_ref(y|x))   (the DPO teacher's implicit reward).

Every frozen quantity is a cached per-token `logps` signal: π_sref ("reference"), π_dpo ("dpo_teacher") and
π_ref ("ref_teacher") on the chosen and rejected responses. One policy pass per side, no teacher distribution.
Only their per-sequence sums enter the loss, so a teacher of another tokenizer serves them as the log-probs of the
same text (bench.signals.xtok.logps_from_xtok: the aligned text, all of it unless a side was cut).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from bench.method import LossBatch, Method, MethodConfig, SignalSpec, setting
from methods.dpo import REF_LOGPS, frozen_sequence_logps, sequence_logps

SIDES = ("chosen", "rejected")


def implicit_reward(dpo_logps: torch.Tensor, ref_logps: torch.Tensor, beta_t: float) -> torch.Tensor:
    """r_T(y) = β_T·(log π_dpo(y|x) − log π_ref(y|x)) from sequence log-probs."""
    return beta_t * (dpo_logps - ref_logps)


def ddpo_loss(pi_w, pi_l, ref_w, ref_l, rt_w, rt_l, beta: float) -> torch.Tensor:
    """Per-pair squared error between the student's and the teacher's reward margins."""
    return (beta * ((pi_w - ref_w) - (pi_l - ref_l)) - (rt_w - rt_l)) ** 2


@dataclass
class DDPOConfig(MethodConfig):
    beta: float = setting(0.05, "our choice (the project's DPO β)", "student inverse temperature β", min=0.0)
    beta_t: float = setting(0.05, "our choice: the DPO teacher's β (dpo default), so r_T is its implicit reward", "teacher reward scale β_T", min=0.0)


class DDPO(Method):
    """Distilled DPO: squared regression of the student's DPO margin onto the DPO teacher's implicit reward margin."""

    name = "ddpo"
    display_name = "DDPO"
    citation = "Fisch et al. 2024, Robust Preference Optimization through Reward Model Distillation"
    config_cls = DDPOConfig
    cross_tokenizer_sequence_logps = True  # the teachers' sequence log-probs do not depend on the tokenizer

    def sides(self, cfg):
        return SIDES

    def signals(self, cfg):
        return list(REF_LOGPS) + [SignalSpec(m, s, "logps") for m in ("dpo_teacher", "ref_teacher") for s in SIDES]

    def loss(self, batch: LossBatch, cfg):
        terms = {}
        for side in SIDES:
            pi, ref = sequence_logps(batch, side)
            dpo = frozen_sequence_logps(batch, "dpo_teacher", side)
            tref = frozen_sequence_logps(batch, "ref_teacher", side)
            terms[side] = (pi, ref, implicit_reward(dpo, tref, cfg.beta_t))
        (pi_w, ref_w, rt_w), (pi_l, ref_l, rt_l) = terms["chosen"], terms["rejected"]
        losses = ddpo_loss(pi_w, pi_l, ref_w, ref_l, rt_w, rt_l, cfg.beta)
        margin = ((pi_w - ref_w) - (pi_l - ref_l)).detach()
        return losses.mean(), {"reward_acc": (margin > 0).float().mean().item(),
                               "margin": (cfg.beta * margin).mean().item(),
                               "teacher_margin": (rt_w - rt_l).mean().item()}

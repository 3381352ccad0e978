"""Sequence-level KD (Kim & Rush 2016, "Sequence-Level Knowledge Distillation", EMNLP 2016, §3.2): SFT of the
student on the teacher's own greedy (beam-1) output for each training prompt,

    loss = −mean_t log π_θ(ŷ_t | x, ŷ_<t),   ŷ = greedy generation of the DPO teacher π_dpo.

The generations are one stored pass (side "gen:dpo_teacher"; "gen:ref_teacher" as an option). No teacher
distribution is read, so no signal is declared.
"""
from __future__ import annotations

from dataclasses import dataclass

from bench.method import LossBatch, Method, MethodConfig, setting
from methods.sft import sft_loss


@dataclass
class SeqKDConfig(MethodConfig):
    teacher: str = setting("dpo_teacher", "our choice (the preference-aligned teacher π_dpo; Kim & Rush distil their one teacher)", "model whose stored greedy "
                           "generations are the SFT targets", choices=("dpo_teacher", "ref_teacher"))


class SeqKD(Method):
    """SFT on the teacher's greedy generations (one stored generation pass)."""

    name = "seq_kd"
    display_name = "SeqKD"
    citation = "Kim & Rush 2016, Sequence-Level Knowledge Distillation (EMNLP)"
    config_cls = SeqKDConfig

    def sides(self, cfg):
        return (f"gen:{cfg.teacher}",)

    def signals(self, cfg):
        return []

    def loss(self, batch: LossBatch, cfg):
        loss = sft_loss(batch.policy[f"gen:{cfg.teacher}"], batch, f"gen:{cfg.teacher}")
        return loss, {"nll": loss.item()}

"""AlignDistil (Zhang et al., ACL 2025, "AlignDistil: Token-Level Language Model Alignment as Adaptive Policy
Distillation", arXiv 2503.02832; code songmzhang/AlignDistil on OpenRLHF):

    a_t  = β₂ · ‖p_dpo(·|s_t) − p_rdpo(·|s_t)‖₁ + 10⁻³
    p*_t ∝ exp(z_dpo + a_t (z_dpo − z_rdpo))                       (token-adaptive logit extrapolation)
    loss = mean_seq mean_t (β / a_t) · KL(π_θ(·|s_t) || p*_t)       (reverse KL, per-token coefficient β / a_t)

π_dpo is the DPO teacher and π_rdpo the *reverse* DPO teacher (π_ref trained by the same recipe on the pairs with
chosen and rejected swapped: pipeline role `rdpo_teacher`, a cached stage). p* and a_t are computed once per side
from both teachers' full logits and cached as a top-k signal (`bench.signals.contrast`); the KL runs over the k+1
bins of p* (exact at k = V − 1, tested); p*'s rest is kept as a log (the extrapolated target is often peaked
beyond a probability's float resolution).

Defaults and deviations (the authors' code, snapshot f80ca4e; docs/notes/AlignDistil.md):
- β = 0.1 and β₂ = 10 (off-policy script `train_scripts/ultrafeedback/qwen2.5-1.5b/aligndistil_off_policy.sh`
  L22-23; the on-policy script uses β₂ = 15), target temperature 1 (`--kd_temperature` default).
- Off-policy on the chosen responses (`aligndistil_offpolicy_trainer.py` L150-161: rejected responses only train the
  two DPO models); `responses: student_samples` trains on one temperature-1 sample per prompt from the SFT student
  instead (a fixed stand-in for the on-policy variant, whose samples come from the current policy every step).
- Reduction: token mean per sequence, then mean over the batch (`--reward_len_norm`, L238-243).
- The authors' masks skip the distribution that predicts the first response token (no label shift off-policy,
  L186); `skip_first: true` reproduces that, the default keeps every response token. The off-policy code also
  scores the position after EOS; not reproduced.
- In the released mode the SFT reference is not used: the reverse DPO model sits in OpenRLHF's `ref_model` slot.
- The paper body could not be read here (abstract and code only): the a_t formula, β and β₂ come from the code.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from bench.method import LossBatch, Method, MethodConfig, SignalSpec, sample_side, setting
from bench.tensors import Packed, seg_sum, student_bins


def reverse_kl_bins(packed: Packed, target: dict[str, torch.Tensor]) -> torch.Tensor:
    """KL(π_θ || p*) over the k+1 bins (p*'s top-k ids, the rest) per row, with p*'s rest given as a log [N]."""
    logq, logq_tail = student_bins(packed, target["topk_ids"])
    logp, logp_tail = target["topk_logps"].to(logq.dtype), target["log_tail"].to(logq.dtype)
    q_tail = logq_tail.exp()
    tail = torch.where(q_tail > 0, q_tail * (logq_tail - logp_tail), torch.zeros_like(q_tail))
    return (logq.exp() * (logq - logp)).sum(-1) + tail


def aligndistil_loss(packed: Packed, target: dict[str, torch.Tensor], beta: float, skip_first: bool) -> torch.Tensor:
    """mean over sequences of the token mean of (β / a_t)·KL_{k+1}(π_θ || p*_t)."""
    kl = reverse_kl_bins(packed, target)
    per = beta / target["weight"].to(kl.dtype) * kl
    keep = torch.ones_like(per)
    if skip_first:
        starts = torch.ones_like(packed.seg, dtype=torch.bool)
        starts[1:] = packed.seg[1:] != packed.seg[:-1]
        keep = (~starts).to(per.dtype)
    n = seg_sum(keep, packed.seg, packed.n_seq)
    return (seg_sum(per * keep, packed.seg, packed.n_seq) / n.clamp(min=1.0)).mean()


@dataclass
class AlignDistilConfig(MethodConfig):
    beta: float = setting(0.1, "authors' script (aligndistil_off_policy.sh L22)", "β of the per-token coefficient β/a_t",
                          min=0.0)
    beta2: float = setting(10.0, "authors' off-policy script (L23; on-policy: 15)", "β₂ scaling the teachers' L1 "
                           "distance in a_t", min=0.0)
    temperature: float = setting(1.0, "authors' code (--kd_temperature default 1.0)", "temperature of the target p*",
                                 above=0.0)
    responses: str = setting("chosen", "authors' off-policy code (chosen only)", "the responses distilled on: the "
                             "pairs' chosen side, or one sample per prompt of the SFT student",
                             choices=("chosen", "student_samples"))
    skip_first: bool = setting(False, "our choice (the authors' masks skip it)", "drop the distribution that "
                               "predicts the first response token")
    reverse_teacher: str = setting("rdpo_teacher", "paper (a DPO model trained on swapped pairs)",
                                   "pipeline role of the reverse DPO model", choices=("rdpo_teacher",))


class AlignDistil(Method):
    """Reverse KL toward DPO logits extrapolated away from a reverse-DPO model, token-adaptively."""

    name = "aligndistil"
    display_name = "AlignDistil"
    citation = "Zhang et al. 2025, AlignDistil: Token-Level Language Model Alignment as Adaptive Policy Distillation"
    config_cls = AlignDistilConfig

    def _side(self, cfg) -> str:
        return "chosen" if cfg.responses == "chosen" else sample_side("sft_student", 1, 1.0, 0)

    def sides(self, cfg):
        return (self._side(cfg),)

    def signals(self, cfg):
        return [SignalSpec("dpo_teacher", self._side(cfg), "contrast",
                           (cfg.reverse_teacher, float(cfg.beta2), float(cfg.temperature)))]

    def loss(self, batch: LossBatch, cfg):
        side = self._side(cfg)
        target = batch.signal("dpo_teacher", "contrast", side, (cfg.reverse_teacher, float(cfg.beta2),
                                                                 float(cfg.temperature)))
        loss = aligndistil_loss(batch.policy[side], target, cfg.beta, cfg.skip_first)
        return loss, {"aligndistil": loss.item(), "a_mean": float(target["weight"].float().mean())}

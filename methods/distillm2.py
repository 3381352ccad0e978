"""DistiLLM-2 (Ko, Chen, Kim, Ding, Liang, Zharkov & Yun 2025, "DistiLLM-2: A Contrastive Approach Boosts the
Distillation of LLMs", ICML 2025, arXiv:2503.07067; code github.com/jongwooko/distillm-2): contrastive
distillation, a skew forward KL on teacher responses y_t plus a skew reverse KL on student responses y_s,

    L     = mean over prompts x of [ SKL_α(y_t) + SRKL_α(y_s) ]
    SKL_α(y)  = 1/|y| Σ_t KL( p(·|s_t) ‖ α·p(·|s_t) + (1−α)·q_θ(·|s_t) )      (raises q_θ on the teacher's data)
    SRKL_α(y) = 1/|y| Σ_t KL( q_θ(·|s_t) ‖ (1−α)·p(·|s_t) + α·q_θ(·|s_t) )    (lowers q_θ where p is small)

p = the teacher (π_dpo by default), q_θ = the student, α = 0.1 for both skews, the two terms weighted 1 : 1.
Teacher responses y_t = side "gen:<teacher>", student responses y_s = side "gen:sft_student" (the cached generation
stages); the teacher distribution is its cached top-k signal on both sides.

Checked against the authors' code (src/distillm_trainer.py, loss_type "distillm_v2", the shipped configs):
  - the pairs: chosen = teacher generation, rejected = student generation (generate/reformat.py);
  - α: `base_alpha_1 = base_alpha_2 = 0.1`; SKL's mixture log(α·p + (1−α)·q) and SRKL's log((1−α)·p + α·q);
  - weights: `(2 − β)·SKL + β·SRKL` with β = 1 (its `gradual_beta` schedule, β rising 1 → 1.5, is switched off
    by a constant in __init__), i.e. 1 : 1;
  - reduction: per-token divergences averaged over each response's tokens (`average_log_prob=True`), then the
    mean over the batch's pairs — the default here (`reduction="sequence"`; "token" = one token mean per side);
  - the code's per-sample adaptive α (`update_alpha`, off by a constant in __init__) is not implemented.
Deviations, as options or documented:
  - SRKL's mixture: the code detaches q_θ inside (1−α)·p + α·q_θ (`vocab_logps.detach()`); DistiLLM-2's definition
    of SRKL has no stop-gradient. Default `srkl_mix="full"` (the definition); "detached" = the code. The forward
    value is the same, only the gradient differs. (SKL's mixture is not detached in the code either.)
  - The code uses the teacher's full-vocabulary distribution; here both divergences run over the k+1 bins of the
    cached top-k signal (teacher top-k probs + tail; the student's probs at those ids + its remaining mass), a
    coarse-graining that can only lower an f-divergence and is exact for k ≥ V−1.
  - Responses: the code samples both sides at temperature 0.8 (generate/generate_vllm.py) and regenerates
    nothing during training; here they are the cached greedy generations of the pipeline's generation stage.
The paper text beyond its abstract was not reachable here; the weights above are the code's.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from bench.method import LossBatch, Method, MethodConfig, SignalSpec, setting, token_mean
from bench.tensors import Packed, kplus1_bins, seg_mean, skew_kl_bins

STUDENT_ROLLOUTS = "gen:sft_student"


def skew_token_divergence(packed: Packed, topk: dict[str, torch.Tensor], alpha: float, reverse: bool,
                          detach_mix: bool = False) -> torch.Tensor:
    """Per-row SKL_α (reverse=False) or SRKL_α (reverse=True) over the k+1 bins of the cached teacher top-k [N]."""
    logq, logp, p = kplus1_bins(packed, topk["topk_ids"], topk["topk_logps"], topk["tail"])
    return skew_kl_bins(logq, logp, p, alpha, reverse=reverse, detach_mix=detach_mix)


def reduce(tok: torch.Tensor, packed: Packed, reduction: str, batch: LossBatch | None = None,
           side: str = "chosen") -> torch.Tensor:
    """'sequence': mean over sequences of the per-sequence token mean (authors' code); 'token': token mean (over the
    global step's tokens of `side` under the trainer's `batch`)."""
    if reduction == "sequence":
        return seg_mean(tok, packed.seg, packed.n_seq).mean()
    if reduction == "token":
        return token_mean(tok, side, batch)
    raise ValueError(f"unknown reduction {reduction!r}")


def distillm2_loss(teacher_side: Packed, topk_t: dict[str, torch.Tensor], student_side: Packed,
                   topk_s: dict[str, torch.Tensor], alpha: float = 0.1, srkl_mix: str = "full",
                   reduction: str = "sequence", batch: LossBatch | None = None, sides: tuple[str, str] = ("", "")
                   ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """SKL_α on the teacher responses + SRKL_α on the student responses (`sides`: their names, for the trainer's
    global token means). Returns (loss, parts)."""
    if srkl_mix not in ("full", "detached"):
        raise ValueError(f"unknown srkl_mix {srkl_mix!r}")
    skl = reduce(skew_token_divergence(teacher_side, topk_t, alpha, reverse=False), teacher_side, reduction, batch,
                 sides[0])
    srkl = reduce(skew_token_divergence(student_side, topk_s, alpha, reverse=True, detach_mix=srkl_mix == "detached"),
                  student_side, reduction, batch, sides[1])
    return skl + srkl, {"skl_teacher": skl, "srkl_student": srkl}


@dataclass
class DistiLLM2Config(MethodConfig):
    alpha: float = setting(0.1, "DistiLLM-2 authors' code (src/distillm_trainer.py: base_alpha_1 = base_alpha_2 = "
                           "0.1)", "skew α of both divergences (SKL: α·p + (1−α)·q; SRKL: (1−α)·p + α·q)",
                           min=0.0, max=0.99)
    srkl_mix: str = setting("full", "DistiLLM-2's SRKL definition; 'detached' = authors' code (q detached in the "
                            "mixture)", "gradient through the student inside SRKL's mixture: full | detached",
                            choices=("full", "detached"))
    reduction: str = setting("sequence", "authors' code (average_log_prob=True, then the batch mean)",
                             "sequence: mean of per-response token means; token: token mean per side",
                             choices=("sequence", "token"))
    teacher: str = setting("dpo_teacher", "our choice: the preference-aligned teacher π_dpo (option π_ref)",
                           "teacher whose generations and top-k signal are distilled",
                           choices=("dpo_teacher", "ref_teacher"))


class DistiLLM2(Method):
    """DistiLLM-2: skew KL on teacher responses plus skew reverse KL on student responses (contrastive KD)."""

    name = "distillm2"
    display_name = "DistiLLM-2"
    citation = "Ko et al. 2025, DistiLLM-2: A Contrastive Approach Boosts the Distillation of LLMs (ICML)"
    config_cls = DistiLLM2Config

    def sides(self, cfg):
        return (f"gen:{cfg.teacher}", STUDENT_ROLLOUTS)

    def signals(self, cfg):
        return [SignalSpec(cfg.teacher, side, "topk") for side in self.sides(cfg)]

    def loss(self, batch: LossBatch, cfg):
        t_side, s_side = self.sides(cfg)
        loss, parts = distillm2_loss(batch.policy[t_side], batch.signal(cfg.teacher, "topk", t_side),
                                     batch.policy[s_side], batch.signal(cfg.teacher, "topk", s_side),
                                     cfg.alpha, cfg.srkl_mix, cfg.reduction, batch, (t_side, s_side))
        return loss, {k: v.item() for k, v in parts.items()}

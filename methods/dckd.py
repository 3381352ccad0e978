"""DCKD, dual-constrained knowledge distillation (Gao et al. 2025, "Advantage-Guided Distillation for Preference
Alignment in Small Language Models", ICLR 2025, eq. 7):

    L = SFT(y_w) + α · (sparseKL_w + sparseKL_l)

    SFT(y_w)     = −mean_t log π_θ(y_w,t | s_t)                        (token mean over the batch's chosen tokens)
    sparseKL_w   = mean_t KL_{k+1}(π_T(·|s_t) || π_θ(·|s_t)) on y_w     (token mean over the batch's chosen tokens)
    sparseKL_l   = the same on y_l                                     (token mean over the batch's rejected tokens)

KL_{k+1} is the forward KL over k+1 bins: the teacher's cached top-k probabilities plus its tail mass, against the
student's full-softmax probabilities at the same ids plus the student's remaining mass (`bench.tensors.sparse_kl`).
Teacher π_T = π_dpo (the DPO teacher); α = 0.2 (best value of the paper's α sweep).

Ablations (settings): `teacher="chosen_teacher"` is "w/o DPO teacher" (π_ref SFT'd on the chosen responses as the
teacher); `use_rejected=False` is "w/o dispreferred" (L = SFT(y_w) + α·sparseKL_w; the rejected side is not run).

Authors' released code: weights 0.1 on each KL term instead of α = 0.2 → `recipe="authors"` (then `alpha` must
stay at its default; it is not read).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from bench.errors import BenchError
from bench.method import LossBatch, Method, MethodConfig, SignalSpec, setting, token_mean
from bench.tensors import Packed, sparse_kl

AUTHORS_KL_WEIGHT = 0.1
DEFAULT_ALPHA = 0.2


def sft_nll(packed: Packed, batch: LossBatch | None = None, side: str = "chosen") -> torch.Tensor:
    """−mean_t log π_θ(y_t|s_t) over the packed rows (token mean; global under the trainer's `batch`)."""
    return token_mean(-packed.token_logps(), side, batch)


def sparse_kl_mean(packed: Packed, topk: dict[str, torch.Tensor], batch: LossBatch | None = None,
                   side: str = "chosen") -> torch.Tensor:
    """Token mean of the forward k+1-bin KL(π_T || π_θ) over the packed rows (global under `batch`)."""
    return token_mean(sparse_kl(packed, topk["topk_ids"], topk["topk_logps"], topk["tail"]), side, batch)


def dckd_loss(chosen: Packed, topk_w: dict[str, torch.Tensor], rejected: Packed | None = None,
              topk_l: dict[str, torch.Tensor] | None = None, w_chosen: float = DEFAULT_ALPHA,
              w_rejected: float = DEFAULT_ALPHA, batch: LossBatch | None = None
              ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """SFT(y_w) + w_chosen·sparseKL_w (+ w_rejected·sparseKL_l when `rejected` is given). Returns (loss, parts)."""
    kl_w = sparse_kl_mean(chosen, topk_w, batch)  # first: on the chunked head its pass also yields the token log-probs
    nll = sft_nll(chosen, batch)
    loss = nll + w_chosen * kl_w
    parts = {"nll": nll, "kl_chosen": kl_w}
    if rejected is not None:
        if topk_l is None:
            raise ValueError("dckd_loss: a rejected side needs its teacher top-k signal")
        kl_l = sparse_kl_mean(rejected, topk_l, batch, "rejected")
        loss = loss + w_rejected * kl_l
        parts["kl_rejected"] = kl_l
    return loss, parts


@dataclass
class DCKDConfig(MethodConfig):
    alpha: float = setting(DEFAULT_ALPHA, "ADPA paper (eq. 7), best of its α sweep",
                           "weight α of each sparse-KL term", min=0.0)
    teacher: str = setting("dpo_teacher", "ADPA paper eq. 7 (π_dpo); 'chosen_teacher' = ablation w/o DPO teacher",
                           "teacher whose cached top-k is distilled", choices=("dpo_teacher", "chosen_teacher"))
    use_rejected: bool = setting(True, "ADPA paper eq. 7; False = ablation w/o dispreferred responses",
                                 "add the sparse-KL term on the rejected responses")
    recipe: str = setting("paper", "ADPA paper eq. 7; 'authors' = released code (0.1 on each KL)",
                          "'paper': weights α; 'authors': weights 0.1 on each KL (alpha not read)",
                          choices=("paper", "authors"))

    def validate(self) -> None:
        super().validate()
        if not math.isfinite(self.alpha):
            raise BenchError(f"dckd: alpha={self.alpha} is invalid; it must be a finite number")
        if self.recipe == "authors" and self.alpha != DEFAULT_ALPHA:
            raise BenchError(f"dckd: recipe='authors' fixes both KL weights at {AUTHORS_KL_WEIGHT}; alpha={self.alpha} "
                             "would be ignored (drop alpha or use recipe='paper')")


def kl_weight(cfg: DCKDConfig) -> float:
    return AUTHORS_KL_WEIGHT if cfg.recipe == "authors" else cfg.alpha


class DCKD(Method):
    """DCKD: SFT on chosen plus sparse top-k KL to the DPO teacher on chosen and rejected responses."""

    name = "dckd"
    display_name = "DCKD"
    citation = "Gao et al. 2025 (ADPA paper, ICLR 2025), eq. 7"
    config_cls = DCKDConfig
    cross_tokenizer_topk = True  # forward sparse KL: a cross-tokenizer teacher's top-k through the vocabulary map

    def sides(self, cfg):
        return ("chosen", "rejected") if cfg.use_rejected else ("chosen",)

    def signals(self, cfg):
        return [SignalSpec(cfg.teacher, side, "topk") for side in self.sides(cfg)]

    def loss(self, batch: LossBatch, cfg):
        w = kl_weight(cfg)
        rejected = batch.policy["rejected"] if cfg.use_rejected else None
        topk_l = batch.signal(cfg.teacher, "topk", "rejected") if cfg.use_rejected else None
        loss, parts = dckd_loss(batch.policy["chosen"], batch.signal(cfg.teacher, "topk", "chosen"),
                                rejected, topk_l, w, w, batch)
        return loss, {k: v.item() for k, v in parts.items()}

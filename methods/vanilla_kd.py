"""Vanilla word-level KD (Hinton, Vinyals & Dean 2015, "Distilling the Knowledge in a Neural Network"; token-level
("word-level") form for sequence models as in Kim & Rush 2016):

    loss = SFT(y_w) + α · mean_t sparseKL(π_T(·|s_t) || π_θ(·|s_t))   on the chosen responses y_w.

The teacher distribution is the cached top-k signal (k teacher probs + tail mass; `bench.tensors.sparse_kl`),
so the KL is over k+1 bins; with k = V−1 it is the exact full-vocabulary KL (tested). Teacher π_dpo by default,
π_ref as an option. Temperature 1 (the cache stores temperature-1 log-probs).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from bench.method import LossBatch, Method, MethodConfig, SignalSpec, setting, token_mean
from bench.tensors import Packed, sparse_kl
from methods.sft import sft_loss

TEACHERS = ("dpo_teacher", "ref_teacher")


def token_sparse_kl(packed: Packed, topk: dict, reverse: bool = False) -> torch.Tensor:
    """Per-row (k+1)-bin KL between the cached teacher top-k signal and the student rows  [N]."""
    return sparse_kl(packed, topk["topk_ids"], topk["topk_logps"], topk["tail"], reverse=reverse)


def vanilla_kd_loss(packed: Packed, topk: dict, alpha: float, batch: LossBatch | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(total, sft, kd) with kd the token-mean forward sparse KL (token means global under `batch`)."""
    kd = token_mean(token_sparse_kl(packed, topk), "chosen", batch)  # first: its pass also yields the token log-probs
    sft = sft_loss(packed, batch)
    return sft + alpha * kd, sft, kd


@dataclass
class VanillaKDConfig(MethodConfig):
    alpha: float = setting(0.2, "our choice (DCKD's α, so VanillaKD and DCKD differ only in y_l)", "weight α of the KL term", min=0.0)
    teacher: str = setting("dpo_teacher", "our choice (π_dpo; option π_ref)", "teacher whose top-k is distilled",
                           choices=TEACHERS)


class VanillaKD(Method):
    """SFT on y_w plus forward KL to the teacher's cached top-k distribution."""

    name = "vanilla_kd"
    display_name = "Vanilla KD"
    citation = "Hinton, Vinyals & Dean 2015, Distilling the Knowledge in a Neural Network"
    config_cls = VanillaKDConfig
    cross_tokenizer_topk = True  # forward sparse KL: a cross-tokenizer teacher's top-k through the vocabulary map

    def sides(self, cfg):
        return ("chosen",)

    def signals(self, cfg):
        return [SignalSpec(cfg.teacher, "chosen", "topk")]

    def loss(self, batch: LossBatch, cfg):
        total, sft, kd = vanilla_kd_loss(batch.policy["chosen"], batch.signal(cfg.teacher, "topk", "chosen"),
                                         cfg.alpha, batch)
        return total, {"nll": sft.item(), "kl": kd.item()}

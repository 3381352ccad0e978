"""SFT: −mean_t log π_θ(y_w,t | s_t) (token mean over the batch's response tokens)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from bench.method import LossBatch, Method, MethodConfig
from bench.tensors import Packed


def sft_loss(packed: Packed) -> torch.Tensor:
    """Token-mean negative log-likelihood of the response tokens."""
    return -packed.token_logps().mean()


@dataclass
class SFTConfig(MethodConfig):
    pass


class SFT(Method):
    """Supervised fine-tuning on the chosen (or SFT) responses."""

    name = "sft"
    display_name = "SFT"
    citation = "standard maximum likelihood"
    config_cls = SFTConfig

    def sides(self, cfg):
        return ("chosen",)

    def loss(self, batch: LossBatch, cfg):
        loss = sft_loss(batch.policy["chosen"])
        return loss, {"nll": loss.item()}

"""SFT: −mean_t log π_θ(y_w,t | s_t) (token mean over the batch's response tokens)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from bench.method import LossBatch, Method, MethodConfig, token_mean
from bench.tensors import Packed


def sft_loss(packed: Packed, batch: LossBatch | None = None, side: str = "chosen") -> torch.Tensor:
    """Token-mean negative log-likelihood of the response tokens (over the global step's tokens of `side` when the
    trainer's `batch` is given)."""
    return token_mean(-packed.token_logps(), side, batch)


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
        loss = sft_loss(batch.policy["chosen"], batch)
        return loss, {"nll": loss.item()}

"""ULD, Universal Logit Distillation (Boizard, El Haddad, Hudelot & Colombo 2024, "Towards Cross-Tokenizer
Distillation: the Universal Logit Distillation Loss for LLMs", arXiv 2402.12030):

    loss = CE(y_w) + λ · mean_t Σ_r | q_(r)(·|s_t) − p_(r)(·|s'_t) |

where q_(r) and p_(r) are the student's and the teacher's next-token probabilities sorted in decreasing order
(rank r; the shorter vocabulary padded with zeros): the closed form of the Wasserstein-1 distance between the two
distributions under a cost that ignores token identity, so it needs no shared vocabulary. Token t of the student's
response is paired with token t of the teacher's tokenization of the same response (the paper's positional pairing,
both truncated to the shorter one), or, with `pairing: span`, with the teacher position where the same characters
begin (the first token of each aligned span; TRL's byte-offset alignment).

Top-k cache: the teacher's distribution is its cached top-k (sorted) plus the rest. The distance here is exact over
the first k ranks and takes the rest as one bin: Σ_{r≤k} |q_(r) − p_(r)| + |q_rest − p_rest|, a lower bound of the
full sum that equals it when k covers both vocabularies (tested against the full sorted distance in float64).

Defaults: λ = 1 and a CE weight of 1 (the authors' training code, `llm-recipes` models/distillation_model.py, as
reproduced by the derived implementations we could read: crossentropy_weight=1, distillation_weight=1); temperature
1 on both sides. Deviation: the distance is averaged over the batch's paired tokens (this project's token mean)
where the authors average per sequence, then over the batch. The teacher is π_dpo by default (preference
distillation), π_ref as an option.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from bench.method import LossBatch, Method, MethodConfig, SignalSpec, global_mean, setting
from bench.tensors import Packed, rowwise
from methods.sft import sft_loss

TEACHERS = ("dpo_teacher", "ref_teacher")


def _sorted_l1_rows(z: torch.Tensor, t_logps: torch.Tensor) -> torch.Tensor:
    """Per row: Σ_{r≤k} |q_(r) − p_(r)| + |q_rest − p_rest|, q = softmax(z) (differentiable), p from the teacher's
    sorted top-k log-probs [c, k] (−inf entries are zero mass); a student vocabulary narrower than k is padded
    with zeros."""
    dt = torch.promote_types(z.dtype, torch.float32)
    k = t_logps.shape[-1]
    q_top = torch.log_softmax(z.to(dt), dim=-1).topk(min(k, z.shape[-1]), dim=-1).values.exp()
    q_top = torch.nn.functional.pad(q_top, (0, k - q_top.shape[-1]))
    p_top = t_logps.to(dt).exp()
    q_rest = (1.0 - q_top.sum(-1)).clamp(min=0.0)
    p_rest = (1.0 - p_top.sum(-1)).clamp(min=0.0)
    return (q_top - p_top).abs().sum(-1) + (q_rest - p_rest).abs()


def sorted_l1(packed, t_logps: torch.Tensor) -> torch.Tensor:
    """The top-k ULD distance per student row [N] (see the module docstring)."""
    return rowwise(packed, _sorted_l1_rows, t_logps)[0]


def paired_rows(xtok: dict, pairing: str) -> torch.Tensor:
    """The student rows that have a teacher partner [N] bool."""
    return (xtok["pos_valid"] if pairing == "position" else xtok["first"]).bool()


def uld_term(packed: Packed, xtok: dict, pairing: str, batch: LossBatch | None = None) -> torch.Tensor:
    """Mean ULD distance over the student rows that have a teacher partner (0 when none has); under the trainer
    over the global step's paired rows."""
    mask = paired_rows(xtok, pairing)
    t = xtok["pos_logps"] if pairing == "position" else xtok["topk_logps"]
    t = t.to(torch.promote_types(t.dtype, torch.float32))
    t = torch.where(mask[:, None], t, torch.zeros_like(t))  # finite on unpaired rows
    d = sorted_l1(packed, t)
    w = mask.to(d.dtype)
    n = w.sum() if batch is None else batch.stat("paired", w.sum().reshape(1)).sum()
    return global_mean(d * w, n, batch)


def uld_loss(packed: Packed, xtok: dict, lam: float, ce_weight: float, pairing: str, batch: LossBatch | None = None):
    """(total, ce, uld)."""
    dist = uld_term(packed, xtok, pairing, batch)
    ce = sft_loss(packed, batch)
    return ce_weight * ce + lam * dist, ce, dist


@dataclass
class ULDConfig(MethodConfig):
    lam: float = setting(1.0, "authors' code (llm-recipes distillation_weight=1)", "weight λ of the ULD distance",
                         min=0.0)
    ce_weight: float = setting(1.0, "authors' code (llm-recipes crossentropy_weight=1)", "weight of CE on y_w",
                               min=0.0)
    pairing: str = setting("position", "paper (positional pairing, truncated to the shorter response)",
                           "teacher partner of a student token: same index, or the start of the same span",
                           choices=("position", "span"))
    teacher: str = setting("dpo_teacher", "our choice (π_dpo; option π_ref)", "teacher whose top-k is distilled",
                           choices=TEACHERS)


class ULD(Method):
    """CE on y_w plus the sorted-probability (Wasserstein-1) distance to the teacher; any two tokenizers."""

    name = "uld"
    display_name = "ULD"
    citation = "Boizard et al. 2024, Towards Cross-Tokenizer Distillation: the Universal Logit Distillation Loss"
    config_cls = ULDConfig

    def sides(self, cfg):
        return ("chosen",)

    def signals(self, cfg):
        return [SignalSpec(cfg.teacher, "chosen", "xtok")]

    def step_stats(self, cfg, batch: LossBatch, lengths):
        rows = paired_rows(batch.signal(cfg.teacher, "xtok", "chosen"), cfg.pairing)
        return {"paired": rows.sum().reshape(1).double()}

    def loss(self, batch: LossBatch, cfg):
        total, ce, dist = uld_loss(batch.policy["chosen"], batch.signal(cfg.teacher, "xtok", "chosen"), cfg.lam,
                                   cfg.ce_weight, cfg.pairing, batch)
        return total, {"nll": ce.item(), "uld": dist.item()}

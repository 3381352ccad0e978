"""ADPA, advantage-guided distillation for preference alignment (Gao et al. 2025, "Advantage-Guided Distillation
for Preference Alignment in Small Language Models", ICLR 2025, eq. 10):

    L = SFT(y_w) − γ · mean_t Σ_{a ∈ K_t} π_θ(a | ŝ_t) · A_t(a)

    A_t(a) = log π_dpo(a | ŝ_t) − log π_ref(a | ŝ_t),   K_t = the DPO teacher's cached top-k at ŝ_t.

ŝ_t are the states of stored rollouts ŷ: one greedy generation of the SFT student per training prompt (side
"gen:sft_student"); the mean runs over all rollout tokens of the batch, SFT(y_w) is the token-mean NLL of the
chosen responses. π_θ(a|ŝ_t) is the student's full-softmax probability. Tokens outside K_t contribute nothing.

Reference log-probs come from the reference teacher's own cached top-k R_t (signal ref_teacher.topk):
  - a ∈ K_t ∩ R_t: its cached log π_ref(a);
  - a ∈ K_t \\ R_t: the log of π_ref's smallest top-k probability, min_{b∈R_t} log π_ref(b)   (paper; fill="ref_min");
  - a ∈ R_t \\ K_t: dropped.
γ = 1.6 (the authors' 1B recipe; the paper sweeps 0.5–5 with a peak near 3).

Authors' released code, offered as options (the paper form is the default):
  - fill="dpo_min": a missing reference log-prob is filled with π_dpo's smallest top-k log-prob
    (the code also floors both probabilities at 1e-7; not reproduced: cached log-probs are float16 anyway);
  - clamp=True: A_t clamped to [1e-8, 1 − 1e-8] (silences every negative advantage; caps positive ones at ~1).

Variants (setting `variant`; the ablations of the paper), every one weighted by γ (eq. 10; eq. 30–31 for the Q
variants, which the paper writes with γ/|ŷ| Σ_t):
  - "adpa":      the loss above;
  - "no_ref":    w/o reference teacher: SFT − γ·mean_t Σ_{a∈K_t} π_θ(a|ŝ_t)·log π_dpo(a|ŝ_t) (fill/clamp do not
                 apply). Every term is ≤ 0, so on its own it pushes mass out of K_t; only SFT counteracts it;
  - "q_argmax":  SFT + γ·mean_t CE(onehot(a*_t), π_θ(·|ŝ_t)) = SFT − γ·mean_t log π_θ(a*_t|ŝ_t),
                 a*_t = argmax_{a∈K_t} A_t(a) (ties: the first in K_t's order, i.e. the larger π_dpo)   (eq. 30);
  - "q_softmax": SFT + γ·mean_t KL(p_A,t || π_θ(·|ŝ_t)), p_A,t = softmax over K_t of A_t (temperature 1,
                 zero outside K_t)                                                                     (eq. 31).
                 Because p_A,t has no mass outside K_t this is the exact full-vocabulary KL:
                 Σ_{a∈K_t} p_A,t(a) [log p_A,t(a) − log π_θ(a|ŝ_t)] with π_θ the full softmax (not renormalised
                 on K_t, so it also pulls π_θ's mass into K_t).
Token-mean convention (all variants): "mean_t" is the mean over ALL rollout tokens of the batch, the harness's
convention for every token loss; the paper's γ/|ŷ| Σ_t normalises per sequence (the two agree when the batch's
rollouts have equal lengths).
State source (setting `state_source`): "student" (gen:sft_student, default), "chosen", "rejected" (ŷ = y_w or y_l)
or "teacher" (gen:dpo_teacher). With "chosen" one policy pass on the chosen side serves both terms.
Fill, clamp and the variant act on A_t in this order: advantage (with fill) → clamp → variant.

Across tokenizers (teachers of another family; not in the paper): both teachers' top-k reach the student's rows
through the character alignment and the byte-level vocabulary map (bench.signals.xtok.topk_from_xtok). At a row that
starts an aligned span, K_t is the DPO teacher's top-k ids that have a student twin, R_t the reference's, and A_t is
as above over those (filler slots take no part in matches or floors); inside a span both teachers put all their
mass on the row's own token, so A_t = 0 there and the advantage term is carried by the span starts (q variants: the
row's own token, as the one-hot teacher of DCKD's map). A row whose DPO or reference top-k has no twin adds nothing.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from bench.errors import BenchError
from bench.method import LossBatch, Method, MethodConfig, SignalSpec, setting, token_mean
from bench.tensors import Packed, logps_at, work_dtype
from methods.sft import sft_loss

CLAMP_LO, CLAMP_HI = 1e-8, 1.0 - 1e-8
VARIANTS = ("adpa", "no_ref", "q_argmax", "q_softmax")
STATE_SOURCES = ("student", "chosen", "rejected", "teacher")
DEFAULT_GAMMA = 1.6


# ---------------------------------------------------------------- pure tensor math


def fill_reference(dpo_ids: torch.Tensor, dpo_logps: torch.Tensor, ref_ids: torch.Tensor, ref_logps: torch.Tensor,
                   fill: str = "ref_min", dpo_valid: torch.Tensor | None = None,
                   ref_valid: torch.Tensor | None = None) -> torch.Tensor:
    """log π_ref at each of the DPO teacher's top-k ids [N, k], from the reference's own top-k [N, k'].

    Ids found in the reference's top-k take its cached log-prob; missing ids take the row's smallest reference
    top-k log-prob (fill="ref_min", paper) or the row's smallest DPO top-k log-prob (fill="dpo_min", authors' code).
    Ids only in the reference's top-k are dropped (the result is indexed like dpo_ids). `dpo_valid`/`ref_valid`
    ([N, k] bool, a teacher of another tokenizer read through the vocabulary map) leave filler slots out of the
    matches and the floors.
    """
    ref_logps = ref_logps.to(dpo_logps.dtype)
    match = dpo_ids.long()[:, :, None] == ref_ids.long()[:, None, :]  # [N, k, k']
    if ref_valid is not None:
        match = match & ref_valid[:, None, :]
    at = torch.where(match, ref_logps[:, None, :], torch.full_like(ref_logps[:, None, :], float("-inf"))).amax(-1)
    if fill in ("ref_min", "dpo_min"):
        src, ok = (ref_logps, ref_valid) if fill == "ref_min" else (dpo_logps, dpo_valid)
        floor = (src if ok is None else torch.where(ok, src, torch.full_like(src, float("inf")))).amin(-1, keepdim=True)
    else:
        raise ValueError(f"unknown fill rule {fill!r}")
    return torch.where(match.any(-1), at, floor.expand_as(at))


def advantages(dpo_ids, dpo_logps, ref_ids=None, ref_logps=None, fill: str = "ref_min",
               clamp: bool = False, dpo_valid=None, ref_valid=None) -> torch.Tensor:
    """A_t(a) = log π_dpo(a) − log π_ref(a) on the DPO teacher's top-k [N, k] (see `fill_reference`); with no
    reference (ref_ids None) A_t(a) = log π_dpo(a) (the "w/o reference teacher" ablation). clamp=True clamps to
    [1e-8, 1 − 1e-8] as the authors' code does. With validity masks (another tokenizer's teacher) a filler slot, or
    every slot of a row whose reference has no real slot, is NaN: `mask_invalid` then takes it out of each variant."""
    adv = dpo_logps if ref_ids is None else dpo_logps - fill_reference(dpo_ids, dpo_logps, ref_ids, ref_logps, fill,
                                                                       dpo_valid, ref_valid)
    adv = adv.clamp(CLAMP_LO, CLAMP_HI) if clamp else adv
    if dpo_valid is None:
        return adv
    ok = dpo_valid & (torch.ones_like(dpo_valid) if ref_valid is None else ref_valid.any(-1, keepdim=True))
    return torch.where(ok, adv, torch.full_like(adv, float("nan")))


def student_logps_at(logits, ids: torch.Tensor) -> torch.Tensor:
    """log π_θ(a|s) (full softmax) at ids [N, k], in work dtype (logits: a Packed, chunked, or [N, V])."""
    return logps_at(logits, ids)


def _work_dtype(logits) -> torch.dtype:
    """float32 at least for the [N, k] math (the teacher signals are float16/float32 in the cache)."""
    return work_dtype(logits)


def expected_advantage(logits, ids: torch.Tensor, adv: torch.Tensor) -> torch.Tensor:
    """Per state: Σ_{a∈K} π_θ(a|s)·A(a) [N]."""
    dt = _work_dtype(logits)
    return (student_logps_at(logits, ids).to(dt).exp() * adv.to(dt)).sum(-1)


def q_argmax_ce(logits, ids: torch.Tensor, adv: torch.Tensor) -> torch.Tensor:
    """Per state: −log π_θ(a*|s), a* = argmax_{a∈K} A(a) (first on ties) [N]."""
    best = adv.argmax(-1, keepdim=True)
    return -student_logps_at(logits, ids.long().gather(-1, best)).squeeze(-1).to(_work_dtype(logits))


def q_softmax_kl(logits, ids: torch.Tensor, adv: torch.Tensor) -> torch.Tensor:
    """Per state: KL(softmax_K(A) || π_θ) = Σ_{a∈K} p_A(a)(log p_A(a) − log π_θ(a)), π_θ the full softmax [N]."""
    dt = _work_dtype(logits)
    logp = torch.log_softmax(adv.to(dt), dim=-1)
    terms = logp.exp() * (logp - student_logps_at(logits, ids).to(dt))
    return torch.where(logp.isneginf(), torch.zeros_like(terms), terms).sum(-1)  # a slot left out (A = −inf): 0




def adpa_loss(chosen: Packed, states: Packed, dpo_topk: dict[str, torch.Tensor],
              ref_topk: dict[str, torch.Tensor] | None = None, gamma: float = DEFAULT_GAMMA, variant: str = "adpa",
              fill: str = "ref_min", clamp: bool = False, batch: LossBatch | None = None, state_side: str = "chosen"
              ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The ADPA loss (or one of its variants); `states` is the Packed of the rollout side `state_side` (may be
    `chosen`); token means over the global step under the trainer's `batch`. Returns (loss, parts)."""
    ids, dpo_logps = dpo_topk["topk_ids"], dpo_topk["topk_logps"].to(_work_dtype(states))
    dpo_valid = dpo_topk.get("valid")  # present only for a teacher of another tokenizer (topk_from_xtok)
    if variant == "no_ref":
        adv = advantages(ids, dpo_logps, dpo_valid=dpo_valid)
    else:
        if ref_topk is None:
            raise ValueError(f"variant {variant!r} needs the reference teacher's top-k")
        adv = advantages(ids, dpo_logps, ref_topk["topk_ids"], ref_topk["topk_logps"], fill, clamp, dpo_valid,
                         ref_topk.get("valid"))
    nll = sft_loss(chosen, batch)
    ok = ~adv.isnan()
    parts = {"nll": nll, "adv_mean": adv.detach().nanmean()}
    if variant in ("adpa", "no_ref"):
        term = token_mean(expected_advantage(states, ids, adv.nan_to_num(nan=0.0)), state_side, batch)
        parts["expected_adv"] = term
        loss = nll - gamma * term
    elif variant == "q_argmax":
        per_row = q_argmax_ce(states, ids, adv.nan_to_num(nan=float("-inf")))
        term = token_mean(torch.where(ok.any(-1), per_row, torch.zeros_like(per_row)), state_side, batch)
        parts["q_ce"] = term
        loss = nll + gamma * term
    elif variant == "q_softmax":
        per_row = q_softmax_kl(states, ids, torch.where(ok.any(-1, keepdim=True), adv.nan_to_num(nan=float("-inf")),
                                                        torch.zeros_like(adv)))
        term = token_mean(torch.where(ok.any(-1), per_row, torch.zeros_like(per_row)), state_side, batch)
        parts["q_kl"] = term
        loss = nll + gamma * term
    else:
        raise ValueError(f"unknown ADPA variant {variant!r}")
    return loss, parts


# ---------------------------------------------------------------- plugin


@dataclass
class ADPAConfig(MethodConfig):
    gamma: float = setting(DEFAULT_GAMMA, "ADPA authors' 1B recipe (the paper sweeps γ 0.5–5, peak ≈3)",
                           "weight γ of the advantage term (every variant: eq. 10, eq. 30–31)", min=0.0)
    variant: str = setting("adpa", "ADPA paper eq. 10; others = its ablations (w/o reference teacher, eq. 30–31)",
                           "adpa | no_ref (w/o reference teacher) | q_argmax | q_softmax", choices=VARIANTS)
    state_source: str = setting("student", "ADPA paper: SFT-student rollouts; others = its state-source ablation",
                                "where the states ŝ come from: student rollouts, chosen, rejected, or teacher "
                                "generations", choices=STATE_SOURCES)
    fill: str = setting("ref_min", "ADPA paper; 'dpo_min' = authors' code",
                        "log-prob for DPO top-k tokens missing from π_ref's top-k: π_ref's or π_dpo's smallest "
                        "top-k log-prob", choices=("ref_min", "dpo_min"))
    clamp: bool = setting(False, "ADPA paper: no clamp; True = authors' code",
                          "clamp advantages to [1e-8, 1-1e-8] (drops every negative advantage)")

    def validate(self) -> None:
        super().validate()
        if self.variant == "no_ref":
            unused = ([f"fill={self.fill!r}"] if self.fill != "ref_min" else []) + (["clamp=True"] if self.clamp else [])
            if unused:
                raise BenchError(f"adpa: {', '.join(unused)} has no effect with variant='no_ref'; drop it (fill and "
                                 "clamp act on the reference advantage)")


class ADPA(Method):
    """ADPA: SFT on chosen plus the DPO/reference teachers' advantage, weighted by the student's probabilities."""

    name = "adpa"
    display_name = "ADPA"
    citation = "Gao et al. 2025 (ADPA paper, ICLR 2025), eq. 10"
    config_cls = ADPAConfig
    cross_tokenizer_topk = True  # advantages at span starts through the vocabulary map (module docstring)
    #: side of the rollouts used when state_source == "student"
    student_rollouts = "gen:sft_student"

    def state_side(self, cfg) -> str:
        return {"student": self.student_rollouts, "chosen": "chosen", "rejected": "rejected",
                "teacher": "gen:dpo_teacher"}[cfg.state_source]

    def sides(self, cfg):
        state = self.state_side(cfg)
        return ("chosen",) if state == "chosen" else ("chosen", state)

    def signals(self, cfg):
        state = self.state_side(cfg)
        specs = [SignalSpec("dpo_teacher", state, "topk")]
        if cfg.variant != "no_ref":
            specs.append(SignalSpec("ref_teacher", state, "topk"))
        return specs

    def loss(self, batch: LossBatch, cfg):
        state = self.state_side(cfg)
        ref = None if cfg.variant == "no_ref" else batch.signal("ref_teacher", "topk", state)
        loss, parts = adpa_loss(batch.policy["chosen"], batch.policy[state], batch.signal("dpo_teacher", "topk", state),
                                ref, cfg.gamma, cfg.variant, cfg.fill, cfg.clamp, batch, state)
        return loss, {k: v.item() for k, v in parts.items()}

"""TVKD, teacher value-based knowledge distillation (Kwon et al. 2025, "Preference Distillation via Value-Based
Reinforcement Learning", NeurIPS 2025, eq. 3):

    r_t  = β · log(π_θ/π_sref)(y_t|s_t) − α · ψ_t,        ψ_t = γ·Φ(s_{t+1}) − Φ(s_t)
    L    = −log σ( Σ_t r_t(y_w) − Σ_t r_t(y_l) )          (mean over the batch's pairs)

with the potential Φ = V, the DPO teacher's soft value V(s) = τ·logsumexp(z_dpo(s)/τ) of its logits z (not its
log-probs: they differ by log Z(s)), cached per state at precompute time (signal dpo_teacher.values.<side>, field
v_soft, computed at this method's `tau`) for s_1..s_{T+1}, s_{T+1} being the state after the last response token.
π_sref log-probs: signal reference.logps.<side>. α = 0.7, τ = 2.0 (paper sweeps), β = 0.1, γ = 1 (eq. 3).

Telescoping. With no discount (γ = 1), Σ_{t=1..T} ψ_t = V(s_{T+1}) − V(s_1) exactly, and s_1 = (x) is the same
state for y_w and y_l, so the shaping term of the pair reduces to −α·[V(s^w_{T_w+1}) − V(s^l_{T_l+1})]: only the
terminal values matter (potential-based shaping leaves the pairwise preference structure intact; the term is a
per-pair constant offset of the logit, which still changes the gradient through σ). We keep the per-token sum, which
is exactly that. `gamma` < 1 gives ψ_t = γ·V(s_{t+1}) − V(s_t), which no longer telescopes.

Value types (Table 5; setting `value_type`), all from the cached DPO-teacher signals:
  state potentials Φ(s_t), defined at every state s_1..s_{T+1}:
    "soft"        v_soft = τ·logsumexp(z/τ)
    "max"         max_a log π_dpo(a|s) = v_max − v_lse (max log-prob)
    "expectation" v_expect = Σ_a softmax(z)_a·z_a
    "margin"      v_margin = top-1 minus top-2 logit
  action-dependent potentials Φ(s_t, y_t) of the token actually taken at s_t (look-ahead shaping):
    "logit"       z_dpo(s_t, y_t) = z_label
    "logprob"     log π_dpo(y_t|s_t) = z_label − v_lse
  with ψ_t = γ·Φ(s_{t+1}, y_{t+1}) − Φ(s_t, y_t) and, because no action is taken at s_{T+1} (z_label is NaN there),
  Φ(s_{T+1}, ·) := 0 (zero terminal potential). Hence with γ = 1, Σ_t ψ_t = −Φ(s_1, y_1): unlike the state
  potentials this does not cancel between y_w and y_l (their first tokens differ).

Authors' released recipe (`recipe="authors"`; scripts/run_distill_dpo.py with qadapter_loss_type="dpo",
qadapter_softvalue_type="entropy"): no β, no reference model, no teacher value, α not read:
    r_t = log q_θ(b(y_t)|s_t) − γ · H_θ(s_{t+1}),   H_θ(s_{T+1}) := 0,
q_θ being the student's k+1-bin distribution on the DPO teacher's top-k at that position (b(y_t) = the label's bin,
the tail bin when y_t is outside the top-k) and H_θ its entropy over the k+1 bins, differentiated (the code does not
detach it). Needs only the dpo_teacher.topk signals. Omitted from that recipe: its 1e-8 clamp of the bin
probabilities and its negligible extra terms (1e-4-weighted KL, 1e-5-weighted DPO).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from bench.errors import BenchError
from bench.method import LossBatch, Method, MethodConfig, SignalSpec, setting
from bench.tensors import Packed, seg_sum, student_bins

VALUE_TYPES = ("soft", "max", "expectation", "margin", "logit", "logprob")
ACTION_VALUE_TYPES = ("logit", "logprob")
DEFAULTS = {"alpha": 0.7, "beta": 0.1, "tau": 2.0, "value_type": "soft"}


# ---------------------------------------------------------------- pure tensor math


def state_masks(vseg: torch.Tensor, vpos: torch.Tensor, seg: torch.Tensor, n_seq: int):
    """(is_first, is_last) masks over the [N+B] value rows: vpos == 0, and vpos == T of the row's sequence."""
    lengths = torch.bincount(seg, minlength=n_seq)
    return vpos == 0, vpos == lengths[vseg.long()]


def potential(values: dict[str, torch.Tensor], value_type: str, is_last: torch.Tensor,
              dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Φ at every state [N+B] for one value type (see the module docstring), computed in `dtype` (at least the
    cache's float32); 0 at s_{T+1} for the action-dependent types."""
    dtype = torch.promote_types(dtype, values["v_soft"].dtype)

    def v(key):
        return values[key].to(dtype)
    if value_type == "soft":
        return v("v_soft")
    if value_type == "max":
        return v("v_max") - v("v_lse")
    if value_type == "expectation":
        return v("v_expect")
    if value_type == "margin":
        return v("v_margin")
    if value_type == "logit":
        q = v("z_label")
    elif value_type == "logprob":
        q = v("z_label") - v("v_lse")
    else:
        raise ValueError(f"unknown value type {value_type!r}")
    return torch.where(is_last, torch.zeros_like(q), q)


def shaping(phi: torch.Tensor, vseg: torch.Tensor, vpos: torch.Tensor, seg: torch.Tensor, n_seq: int,
            gamma: float = 1.0) -> torch.Tensor:
    """ψ_t = γ·Φ(s_{t+1}) − Φ(s_t) per token row [N] from the potentials of the T+1 states of each sequence."""
    is_first, is_last = state_masks(vseg, vpos, seg, n_seq)
    if phi.numel() != seg.numel() + n_seq or not torch.equal(vseg[~is_last].long(), seg.long()):
        raise BenchError(f"values signal is not aligned with the policy rows ({phi.numel()} values for "
                         f"{seg.numel()} tokens in {n_seq} sequences); recompute the signal cache")
    return gamma * phi[~is_first] - phi[~is_last]


def sequence_rewards(pi_logps: torch.Tensor, ref_logps: torch.Tensor, psi: torch.Tensor, seg: torch.Tensor,
                     n_seq: int, alpha: float, beta: float) -> torch.Tensor:
    """Σ_t r_t per sequence, r_t = β(log π_θ − log π_sref)(y_t) − α ψ_t."""
    dt = torch.promote_types(pi_logps.dtype, torch.float32)  # never round the cached float32 signals down
    r = beta * (pi_logps.to(dt) - ref_logps.to(dt)) - alpha * psi.to(dt)
    return seg_sum(r, seg, n_seq)


def pair_loss(r_w: torch.Tensor, r_l: torch.Tensor) -> torch.Tensor:
    """−log σ(R_w − R_l) per pair."""
    return -F.logsigmoid(r_w - r_l)


def side_rewards(packed: Packed, ref_logps: torch.Tensor, values: dict[str, torch.Tensor], alpha: float, beta: float,
                 gamma: float = 1.0, value_type: str = "soft") -> torch.Tensor:
    """Paper form: per-sequence Σ_t r_t of one side."""
    _, is_last = state_masks(values["vseg"], values["vpos"], packed.seg, packed.n_seq)
    phi = potential(values, value_type, is_last, packed.logits.dtype)
    psi = shaping(phi, values["vseg"], values["vpos"], packed.seg, packed.n_seq, gamma)
    return sequence_rewards(packed.token_logps(), ref_logps, psi, packed.seg, packed.n_seq, alpha, beta)


def bin_logps_and_entropy(logits: torch.Tensor, labels: torch.Tensor, topk_ids: torch.Tensor):
    """Student k+1-bin view on the teacher's top-k: (log q of the label's bin [N], bin entropy [N])."""
    logq, logq_tail = student_bins(logits, topk_ids)
    logq_tail = logq_tail.clamp(min=torch.finfo(logq_tail.dtype).min)  # empty tail bin (k == V): 0·log 0 = 0
    hit = topk_ids.long() == labels[:, None]
    label_logq = torch.where(hit.any(-1), logq.gather(-1, hit.long().argmax(-1, keepdim=True)).squeeze(-1), logq_tail)
    entropy = -(logq.exp() * logq).sum(-1) - logq_tail.exp() * logq_tail
    return label_logq, entropy


def next_in_sequence(x: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
    """x of the next row of the same sequence, 0 at each sequence's last row."""
    nxt = torch.zeros_like(x)
    same = seg[1:] == seg[:-1]
    nxt[:-1] = torch.where(same, x[1:], torch.zeros_like(x[1:]))
    return nxt


def authors_side_rewards(packed: Packed, topk_ids: torch.Tensor, gamma: float = 1.0) -> torch.Tensor:
    """Authors' recipe: per-sequence Σ_t [log q_θ(b(y_t)|s_t) − γ·H_θ(s_{t+1})], H_θ(s_{T+1}) = 0."""
    label_logq, entropy = bin_logps_and_entropy(packed.logits, packed.labels, topk_ids)
    dt = torch.promote_types(label_logq.dtype, torch.float32)
    r = label_logq.to(dt) - gamma * next_in_sequence(entropy.to(dt), packed.seg)
    return seg_sum(r, packed.seg, packed.n_seq)


# ---------------------------------------------------------------- plugin


@dataclass
class TVKDConfig(MethodConfig):
    alpha: float = setting(DEFAULTS["alpha"], "TVKD paper sweep (METHODS.md)", "weight α of the shaping term ψ",
                           min=0.0)
    beta: float = setting(DEFAULTS["beta"], "TVKD paper (METHODS.md)", "DPO inverse temperature β", min=0.0)
    tau: float = setting(DEFAULTS["tau"], "TVKD paper sweep (METHODS.md)",
                         "soft-value temperature τ of V = τ·logsumexp(z/τ) (the values cache is computed at it)",
                         min=1e-6)
    gamma: float = setting(1.0, "TVKD paper eq. 3 (undiscounted); < 1 = discounted option",
                           "discount γ in ψ_t = γΦ(s_{t+1}) − Φ(s_t)", min=0.0, max=1.0)
    value_type: str = setting(DEFAULTS["value_type"], "TVKD paper eq. 3; others = its Table-5 variants",
                              "potential: soft | max (log-prob) | expectation | margin | logit | logprob",
                              choices=VALUE_TYPES)
    recipe: str = setting("paper", "METHODS.md: implement the paper; 'authors' = released recipe",
                          "'paper': eq. 3; 'authors': student k+1-bin entropy as next value, no β/α/reference",
                          choices=("paper", "authors"))

    def validate(self) -> None:
        super().validate()
        for key in ("alpha", "beta", "tau", "gamma"):
            if not math.isfinite(getattr(self, key)):
                raise BenchError(f"tvkd: {key}={getattr(self, key)} is invalid; it must be a finite number")
        if self.recipe == "authors":
            unused = [f"{k}={getattr(self, k)!r}" for k, d in DEFAULTS.items() if getattr(self, k) != d]
            if unused:
                raise BenchError(f"tvkd: {', '.join(unused)} has no effect with recipe='authors' (it uses no teacher "
                                 "value, no β, no α and no reference); drop it or use recipe='paper'")


class TVKD(Method):
    """TVKD: DPO with the DPO teacher's soft value as a potential-based token reward shaping."""

    name = "tvkd"
    display_name = "TVKD"
    citation = "Kwon et al. 2025 (NeurIPS 2025), eq. 3"
    config_cls = TVKDConfig

    def sides(self, cfg):
        return ("chosen", "rejected")

    def signals(self, cfg):
        if cfg.recipe == "authors":
            return [SignalSpec("dpo_teacher", side, "topk") for side in self.sides(cfg)]
        return [SignalSpec(model, side, kind) for model, kind in (("reference", "logps"), ("dpo_teacher", "values"))
                for side in self.sides(cfg)]

    def rewards(self, batch: LossBatch, cfg, side: str) -> torch.Tensor:
        packed = batch.policy[side]
        if cfg.recipe == "authors":
            return authors_side_rewards(packed, batch.signal("dpo_teacher", "topk", side)["topk_ids"], cfg.gamma)
        return side_rewards(packed, batch.signal("reference", "logps", side)["logps"],
                            batch.signal("dpo_teacher", "values", side), cfg.alpha, cfg.beta, cfg.gamma,
                            cfg.value_type)

    def loss(self, batch: LossBatch, cfg):
        r_w, r_l = self.rewards(batch, cfg, "chosen"), self.rewards(batch, cfg, "rejected")
        margin = (r_w - r_l).detach()
        return pair_loss(r_w, r_l).mean(), {"reward_acc": (margin > 0).float().mean().item(),
                                             "margin": margin.mean().item()}

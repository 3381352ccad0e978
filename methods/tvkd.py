"""TVKD, teacher value-based knowledge distillation (Kwon, Ko, Kim & Kim 2025, "Preference Distillation via
Value-Based Reinforcement Learning", NeurIPS 2025, arXiv:2509.16965). Default = the MaxEnt form with the student
reference (App. B.3, eq. 11):

    r_t = β · log(π_θ/π_sref)(y_t|s_t) − α · ψ_t,        ψ_t = γ·Φ(s_{t+1}) − Φ(s_t)
    L   = −log σ( Σ_t r_t(y_w) − Σ_t r_t(y_l) )            (mean over the batch's pairs)

with the potential Φ = V, the DPO teacher's soft value V(s) = τ·logsumexp(z_dpo(s)/τ) of its logits z (not its
log-probs: they differ by log Z(s)), cached per state at precompute time (signal dpo_teacher.values.<side>, field
v_soft, computed at this method's `tau`) for s_1..s_{T+1}, s_{T+1} being the state after the last response token.
π_sref log-probs: signal reference.logps.<side>. `reference="none"` is eq. 3 as printed (no reference model):
r_t = β·log π_θ(y_t|s_t) − α·ψ_t.

Temperatures. The paper has ONE β, used both as the value temperature and as the loss scale (it sweeps
β from 0.1 to 5, best 2). We keep two settings: τ = 2.0 (the paper's best β) for the value, β for the loss scale;
β = 0.1 is our choice, not the paper's (the usual DPO scale; the paper's β = 2 as a loss scale is `beta=2`).

The first state. s_1 = (x) is the same state for y_w and y_l, so −Φ(s_1) cancels between the two sums in exact
arithmetic. Here V(s_1) of the two sides comes from separate teacher passes (different batching and padding, bf16
for real teachers), so it need not cancel numerically: for state potentials we drop Φ(s_1) from both sums, i.e.
Σ_t ψ_t := γ·Σ_{t=1..T} Φ(s_{t+1}) − Σ_{t=2..T} Φ(s_t). That is exact for any γ (Φ(s_1) has weight −1 whatever γ is).
With γ = 1 the sum is Φ(s_{T+1}): only the terminal values matter.

Discount. `gamma` < 1 gives ψ_t = γ·Φ(s_{t+1}) − Φ(s_t) summed over t WITHOUT γ^{t−1} weights: that is not
potential-based shaping in Ng et al.'s sense (the sum no longer telescopes and the optimal policy is not preserved);
it is an ablation of ours, not the paper's method.

Across tokenizers (a teacher of another family; not in the paper): the teacher is at a state only where both
tokenizations are, a shared boundary of the character alignment (bench.modeling.alignment). Its potentials are
held constant between boundaries (bench.signals.xtok.values_from_xtok), so ψ_t is 0 inside an aligned span and
Φ(b_{g+1}) − Φ(b_g) on the span's last row: potential-based shaping over the boundary states, which telescopes like
the token-level one (with γ = 1 the sum is the potential of the last shared boundary: the state after EOS when
neither response was cut). The action value types, γ < 1 and the authors' recipe need a teacher value at every
student state and stop with one error line.

Value types (Table 5; setting `value_type`), all from the cached DPO-teacher signals:
  state potentials Φ(s), at every state s_1..s_{T+1}:
    "soft"          v_soft = τ·logsumexp(z/τ)                          (the paper's method)
    "max"           max_a π_dpo(a|s) = exp(v_max − v_lse), a probability
    "expectation"   Σ_a π_dpo(a|s)·z(s, a) = v_expect
    "margin"        π⁽¹⁾(s) − π⁽²⁾(s), the gap between the two largest probabilities
                    = exp(v_max − v_lse) − exp(v_max − v_margin − v_lse)
    "max_logprob"   max_a log π_dpo(a|s) = v_max − v_lse                 (not in the paper; an extra variant)
    "logit_margin"  top-1 minus top-2 logit = v_margin                   (not in the paper; an extra variant)
  action-dependent auxiliary rewards (Corollary 2.1, App. C.3), of the token y_t actually taken at s_t, used
  DIRECTLY in place of ψ_t (no difference of potentials, no telescoping; `gamma` does not apply):
    "logit"         Q(s_t, y_t) = z_dpo(s_t, y_t) = z_label
    "logprob"       log π_dpo(y_t|s_t) = z_label − v_lse
  so r_t = β·log(π_θ/π_sref)(y_t) − α·aux_t, the same sign as ψ_t in r_t.

Authors' released recipe (`recipe="authors"`; scripts/run_distill_dpo.py with qadapter_loss_type="dpo",
qadapter_softvalue_type="entropy"): no β, no reference model, no teacher value, α not read:
    r_t = log q_θ(b(y_t)|s_t) − γ · H_θ(s_{t+1}),   H_θ(s_{T+1}) := 0,
q_θ being the student's k+1-bin distribution on the DPO teacher's top-k at that position (b(y_t) = the label's bin,
the tail bin when y_t is outside the top-k) and H_θ its entropy over the k+1 bins, differentiated (the code does not
detach it). Needs only the dpo_teacher.topk signals. Omitted from that recipe: its 1e-8 clamp of the bin
probabilities and its negligible extra terms (1e-4-weighted KL, 1e-5-weighted DPO).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from bench.errors import BenchError
from bench.method import LossBatch, Method, MethodConfig, SignalSpec, setting
from bench.tensors import Packed, seg_sum, student_bins, work_dtype

STATE_VALUE_TYPES = ("soft", "max", "expectation", "margin", "max_logprob", "logit_margin")
ACTION_VALUE_TYPES = ("logit", "logprob")
VALUE_TYPES = STATE_VALUE_TYPES + ACTION_VALUE_TYPES
REFERENCES = ("student", "none")
DEFAULTS = {"alpha": 0.7, "beta": 0.1, "tau": 2.0, "value_type": "soft", "reference": "student"}


# ---------------------------------------------------------------- pure tensor math


def state_masks(vseg: torch.Tensor, vpos: torch.Tensor, seg: torch.Tensor, n_seq: int):
    """(is_first, is_last) masks over the [N+B] value rows: vpos == 0, and vpos == T of the row's sequence."""
    lengths = torch.bincount(seg, minlength=n_seq)
    return vpos == 0, vpos == lengths[vseg.long()]


def check_aligned(values: dict[str, torch.Tensor], seg: torch.Tensor, n_seq: int) -> None:
    _, is_last = state_masks(values["vseg"], values["vpos"], seg, n_seq)
    if values["vseg"].numel() != seg.numel() + n_seq or not torch.equal(values["vseg"][~is_last].long(), seg.long()):
        raise BenchError(f"values signal is not aligned with the policy rows ({values['vseg'].numel()} values for "
                         f"{seg.numel()} tokens in {n_seq} sequences); recompute the signal cache")


def state_potential(values: dict[str, torch.Tensor], value_type: str,
                    dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Φ(s) at every state [N+B] for a state value type (see the module docstring), in `dtype` (≥ float32)."""
    dtype = torch.promote_types(dtype, torch.float32)

    def v(key):
        return values[key].to(dtype)
    if value_type == "soft":
        return v("v_soft")
    if value_type == "max":
        return torch.exp(v("v_max") - v("v_lse"))
    if value_type == "expectation":
        return v("v_expect")
    if value_type == "margin":
        top1 = v("v_max") - v("v_lse")
        return torch.exp(top1) - torch.exp(top1 - v("v_margin"))
    if value_type == "max_logprob":
        return v("v_max") - v("v_lse")
    if value_type == "logit_margin":
        return v("v_margin")
    raise ValueError(f"unknown state value type {value_type!r}")


def state_shaping(phi: torch.Tensor, vseg: torch.Tensor, vpos: torch.Tensor, seg: torch.Tensor, n_seq: int,
                  gamma: float = 1.0) -> torch.Tensor:
    """ψ_t per token row [N] from the potentials of the T+1 states of each sequence, with Φ(s_1) dropped:
    ψ_1 = γ·Φ(s_2), ψ_t = γ·Φ(s_{t+1}) − Φ(s_t) for t ≥ 2 (see the module docstring)."""
    is_first, is_last = state_masks(vseg, vpos, seg, n_seq)
    cur, first_token = phi[~is_last], is_first[~is_last]
    return gamma * phi[~is_first] - torch.where(first_token, torch.zeros_like(cur), cur)


def action_reward(values: dict[str, torch.Tensor], value_type: str, vseg, vpos, seg, n_seq,
                  dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The teacher's Q(s_t, y_t) = z_label or log π_dpo(y_t|s_t) = z_label − v_lse per token row [N]."""
    _, is_last = state_masks(vseg, vpos, seg, n_seq)
    dtype = torch.promote_types(dtype, torch.float32)
    q = values["z_label"][~is_last].to(dtype)
    if value_type == "logit":
        return q
    if value_type == "logprob":
        return q - values["v_lse"][~is_last].to(dtype)
    raise ValueError(f"unknown action value type {value_type!r}")


def sequence_rewards(pi_logps: torch.Tensor, ref_logps: torch.Tensor | None, aux: torch.Tensor, seg: torch.Tensor,
                     n_seq: int, alpha: float, beta: float) -> torch.Tensor:
    """Σ_t r_t per sequence, r_t = β(log π_θ − log π_sref)(y_t) − α·aux_t (no π_sref term when ref_logps is None)."""
    dt = work_dtype(pi_logps, aux)  # never round the cached float32 signals down
    logratio = pi_logps.to(dt) if ref_logps is None else pi_logps.to(dt) - ref_logps.to(dt)
    return seg_sum(beta * logratio - alpha * aux.to(dt), seg, n_seq)


def pair_loss(r_w: torch.Tensor, r_l: torch.Tensor) -> torch.Tensor:
    """−log σ(R_w − R_l) per pair."""
    return -F.logsigmoid(r_w - r_l)


def side_rewards(packed: Packed, ref_logps: torch.Tensor | None, values: dict[str, torch.Tensor], alpha: float,
                 beta: float, gamma: float = 1.0, value_type: str = "soft") -> torch.Tensor:
    """Paper form: per-sequence Σ_t r_t of one side (ref_logps None = no reference, eq. 3 as printed)."""
    check_aligned(values, packed.seg, packed.n_seq)
    pi = packed.token_logps()
    vseg, vpos = values["vseg"], values["vpos"]
    if value_type in ACTION_VALUE_TYPES:
        aux = action_reward(values, value_type, vseg, vpos, packed.seg, packed.n_seq, pi.dtype)
    else:
        phi = state_potential(values, value_type, pi.dtype)
        aux = state_shaping(phi, vseg, vpos, packed.seg, packed.n_seq, gamma)
    return sequence_rewards(pi, ref_logps, aux, packed.seg, packed.n_seq, alpha, beta)


def bin_logps_and_entropy(logits, labels: torch.Tensor, topk_ids: torch.Tensor):
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
    label_logq, entropy = bin_logps_and_entropy(packed, packed.labels, topk_ids)
    r = label_logq - gamma * next_in_sequence(entropy, packed.seg)
    return seg_sum(r, packed.seg, packed.n_seq)


# ---------------------------------------------------------------- plugin


@dataclass
class TVKDConfig(MethodConfig):
    alpha: float = setting(DEFAULTS["alpha"], "TVKD authors' recipe (recipes/llama3.2-1b-deita-dpomix/TVKD.yaml: "
                           "qadapter_alpha 0.7)",
                           "weight α of the shaping term ψ (or of the action-dependent auxiliary reward)", min=0.0)
    beta: float = setting(DEFAULTS["beta"], "our choice (the usual DPO scale); the paper's single β is 2",
                          "loss scale β of the log-ratio term (the paper uses one β for this and the value "
                          "temperature; here they are separate: see tau)", min=0.0)
    tau: float = setting(DEFAULTS["tau"], "TVKD paper: best β of its sweep β from 0.1 to 5, used as the value "
                         "temperature", "soft-value temperature τ of V = τ·logsumexp(z/τ) (the values cache is "
                         "computed at it)", min=1e-6)
    gamma: float = setting(1.0, "TVKD paper eq. 3 (undiscounted); < 1 is our ablation",
                           "discount γ in ψ_t = γΦ(s_{t+1}) − Φ(s_t), summed WITHOUT γ^t weights: for γ < 1 this "
                           "is not potential-based shaping (no telescoping, not policy-invariant); state value "
                           "types only", min=0.0, max=1.0)
    value_type: str = setting(DEFAULTS["value_type"], "TVKD paper eq. 3 (soft value); others = its Table 5 "
                              "(max_logprob, logit_margin: our extra variants)",
                              "soft | max | expectation | margin | max_logprob | logit_margin (state potentials); "
                              "logit | logprob (action-dependent rewards)", choices=VALUE_TYPES)
    reference: str = setting(DEFAULTS["reference"], "TVKD paper App. B.3, eq. 11 (MaxEnt form with π_sref); "
                             "'none' = eq. 3 as printed", "student: β·log(π_θ/π_sref); none: β·log π_θ",
                             choices=REFERENCES)
    recipe: str = setting("paper", "TVKD paper; 'authors' = the released code (scripts/run_distill_dpo.py)",
                          "'paper': eq. 3/11; 'authors': student k+1-bin entropy as next value, no β/α/reference",
                          choices=("paper", "authors"))

    def validate(self) -> None:
        super().validate()
        if self.recipe == "authors":
            unused = [f"{k}={getattr(self, k)!r}" for k, d in DEFAULTS.items() if getattr(self, k) != d]
            if unused:
                raise BenchError(f"tvkd: {', '.join(unused)} has no effect with recipe='authors' (it uses no teacher "
                                 "value, no β, no α and no reference); drop it or use recipe='paper'")
        elif self.value_type in ACTION_VALUE_TYPES and self.gamma != 1.0:
            raise BenchError(f"tvkd: gamma={self.gamma} has no effect with value_type={self.value_type!r} (an "
                             "action-dependent reward is used directly, not as a difference of potentials)")


class TVKD(Method):
    """TVKD: DPO with the DPO teacher's soft value as a potential-based token reward shaping."""

    name = "tvkd"
    display_name = "TVKD"
    citation = "Kwon et al. 2025 (NeurIPS 2025), eq. 3 / App. B.3 eq. 11"
    config_cls = TVKDConfig
    cross_tokenizer_values = True  # potentials at the shared boundaries of another tokenizer's teacher (see below)

    def cross_tokenizer_problem(self, cfg) -> str | None:
        """Across tokenizers the teacher has a state only where both tokenizations do (a shared boundary), so only
        state potentials that telescope over those states carry across (γ = 1: Σ_t ψ_t is the potential of the last
        shared boundary whatever states lie between); its logit of a student token does not exist."""
        if cfg.recipe == "authors":
            return "recipe='authors' reads the teacher's top-k in the student's vocabulary at every row; use recipe=paper"
        if cfg.value_type in ACTION_VALUE_TYPES:
            return (f"value_type={cfg.value_type} needs the teacher's logit of each student token, which another "
                    f"tokenizer does not have; use a state value ({', '.join(STATE_VALUE_TYPES)})")
        if cfg.gamma != 1.0:
            return (f"gamma={cfg.gamma}: the teacher's potentials exist only at shared boundaries and the discounted "
                    "shaping does not telescope over them; use gamma=1")
        return None

    def sides(self, cfg):
        return ("chosen", "rejected")

    def signals(self, cfg):
        if cfg.recipe == "authors":
            return [SignalSpec("dpo_teacher", side, "topk") for side in self.sides(cfg)]
        kinds = (("reference", "logps"),) if cfg.reference == "student" else ()
        return [SignalSpec(model, side, kind) for model, kind in (*kinds, ("dpo_teacher", "values"))
                for side in self.sides(cfg)]

    def rewards(self, batch: LossBatch, cfg, side: str) -> torch.Tensor:
        packed = batch.policy[side]
        if cfg.recipe == "authors":
            return authors_side_rewards(packed, batch.signal("dpo_teacher", "topk", side)["topk_ids"], cfg.gamma)
        ref = batch.signal("reference", "logps", side)["logps"] if cfg.reference == "student" else None
        return side_rewards(packed, ref, batch.signal("dpo_teacher", "values", side), cfg.alpha, cfg.beta,
                            cfg.gamma, cfg.value_type)

    def loss(self, batch: LossBatch, cfg):
        r_w, r_l = self.rewards(batch, cfg, "chosen"), self.rewards(batch, cfg, "rejected")
        margin = (r_w - r_l).detach()
        return pair_loss(r_w, r_l).mean(), {"reward_acc": (margin > 0).float().mean().item(),
                                             "margin": margin.mean().item()}

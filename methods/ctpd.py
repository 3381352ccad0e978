"""CTPD, Cross-Tokenizer Preference Distillation (Nguyen, Phi, Nguyen, Ngo Van, Le & Nguyen, AAAI 2026, arXiv
2601.11865; code github.com/dinhtruongng/CTPD): DPO over *aligned spans* (the characters between two boundaries both
tokenizations share) with token-level importance weights from the teacher (TIS-DPO across tokenizers) and the
teacher as the reference ("teacher-anchored reference"):

    r(x, y)  = Σ_g w_g · [ log π_θ(g | x, y_<g) − log π_ref(g | x, y_<g) ]
    w_g      = k · exp( ±μ · clamp( log π⁺(g) − log π⁻(g), L, U ) )     (+ on y_w, − on y_l)
    loss     = −log σ( β · (r(x, y_w) − r(x, y_l)) )

A span's log-prob is the sum of its tokens' log-probs under each model's own tokenization: the student's rows of the
span for π_θ, the teacher's tokens of the same characters for π_ref, π⁺ and π⁻ (the `xtok` signal's `span_logp`;
`bench.signals.xtok`). π⁺ is the DPO teacher and π⁻ the teacher trained by the same DPO recipe on the pairs with
chosen and rejected swapped (pipeline role `rdpo_teacher`); π_ref is the SFT teacher. Student rows in no span (a
side cut by the length limit past the last shared boundary, or a rollout whose text does not re-tokenize to its
ids) enter no reward. With one tokenizer every token is its own span and CTPD is TIS-DPO with the teacher's
contrastive weights and the teacher as the reference (tested).

Defaults (the paper's training details as summarised from the AAAI version, and the authors' code
`src/prefkd/weight.py`, `loss/loss.py`): β = 0.1, k = 1, μ = 1, [L, U] = [−0.5, 1.5]; span log-probs are sums
(`average_log_prob` 0). Deviations and options:
- The authors round each weight to 0.01 (`torch.round(w * 100) / 100`, weight.py); `round_weights: true` does too.
- `anchor`: π_ref = the SFT teacher (`ref_teacher`, the paper), the DPO teacher, or `student` (the paper's ablation
  "student as the reference": the SFT student's log-probs summed over the same spans).
- `weights: uniform` sets every w_g = k (no teacher contrast: span-level DPO against the anchor; our ablation, near
  the paper's "average weight" row, whose exact definition we could not read).
- The paper body was read only through a summary and the authors' code (no full text here): the reduction (mean
  over pairs) and the sign convention of the rejected weights come from the code.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from bench.errors import BenchError
from bench.method import LossBatch, Method, MethodConfig, SignalSpec, setting
from bench.tensors import seg_sum, work_dtype
from methods.dpo import REF_LOGPS

SIDES = ("chosen", "rejected")
ANCHORS = ("ref_teacher", "dpo_teacher", "student")


def importance_weights(d: torch.Tensor, sign: float, mu: float, k: float, lo: float, hi: float,
                       round_weights: bool = False) -> torch.Tensor:
    """w = k·exp(sign·μ·clamp(d, L, U)) for d = log π⁺(g) − log π⁻(g) (the authors clamp before the sign)."""
    w = k * torch.exp(sign * mu * d.clamp(lo, hi))
    return torch.round(w * 100) / 100 if round_weights else w


def span_rows(x: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(first [N] bool, in_span [N] bool, start [N] long: the row index of each row's span start) of `xtok` rows;
    a span's rows are contiguous and follow its first row."""
    first = x["first"].bool()
    in_span = x["group"] >= 0
    idx = torch.arange(first.numel(), device=first.device)
    start = torch.where(first, idx, torch.zeros_like(idx)).cummax(0).values
    return first, in_span, start


def span_margins(token_logps: torch.Tensor, seg: torch.Tensor, n_seq: int, x: dict[str, torch.Tensor],
                 w_first: torch.Tensor, anchor_span: torch.Tensor | None, anchor_rows: torch.Tensor | None):
    """Per sequence Σ_g w_g (log π_θ(g) − log π_ref(g)): `w_first` [N] holds each span's weight on its first row,
    the anchor is given per span on first rows (`anchor_span`, a teacher) or per student row (`anchor_rows`)."""
    first, in_span, start = span_rows(x)
    dt = work_dtype(token_logps, w_first)
    w_rows = torch.where(in_span, w_first.to(dt)[start], torch.zeros((), dtype=dt))
    per_row = w_rows * token_logps.to(dt)
    if anchor_span is not None:
        per_row = per_row - torch.where(first & in_span, w_first.to(dt) * anchor_span.to(dt), torch.zeros((), dtype=dt))
    else:
        per_row = per_row - w_rows * anchor_rows.to(dt)
    return seg_sum(per_row, seg, n_seq), w_rows


@dataclass
class CTPDConfig(MethodConfig):
    beta: float = setting(0.1, "CTPD paper, training details (CTPD stage β = 0.1)", "inverse temperature β", min=0.0)
    mu: float = setting(1.0, "authors' weight.py (mu = ±1) and TIS-DPO", "μ of the importance weights", min=0.0)
    k: float = setting(1.0, "authors' weight.py (k = 1)", "scale k of the importance weights", above=0.0)
    clamp_low: float = setting(-0.5, "CTPD paper, training details ([L, U] = [−0.5, 1.5]); weight.py L", "L")
    clamp_high: float = setting(1.5, "CTPD paper, training details; weight.py U", "U")
    anchor: str = setting("ref_teacher", "CTPD paper: the SFT teacher as the reference (teacher-anchored)",
                          "the reference π_ref: ref_teacher, dpo_teacher, or student (the paper's ablation)",
                          choices=ANCHORS)
    weights: str = setting("contrast", "CTPD paper (π⁺/π⁻ contrast); uniform = our ablation (w = k)",
                           "span weights: contrast (the DPO and reverse-DPO teachers) or uniform",
                           choices=("contrast", "uniform"))
    round_weights: bool = setting(False, "our choice; the authors' weight.py rounds w to 0.01 (true reproduces it)",
                                  "round each weight to 0.01")

    def validate(self) -> None:
        super().validate()
        if self.clamp_low > self.clamp_high:
            raise BenchError(f"clamp_low={self.clamp_low} is above clamp_high={self.clamp_high}; set clamp_low <= "
                             "clamp_high")


class CTPD(Method):
    """DPO over aligned spans, weighted by the teacher's DPO/reverse-DPO contrast, anchored at the SFT teacher."""

    name = "ctpd"
    display_name = "CTPD"
    citation = "Nguyen et al. 2026 (AAAI), CTPD: Cross Tokenizer Preference Distillation"
    config_cls = CTPDConfig

    def sides(self, cfg):
        return SIDES

    def _span_models(self, cfg) -> list[str]:
        models = ["dpo_teacher", "rdpo_teacher"] if cfg.weights == "contrast" else []
        if cfg.anchor != "student" and cfg.anchor not in models:
            models.append(cfg.anchor)
        return models or ["dpo_teacher"]  # uniform weights against the student: the spans' structure only

    def signals(self, cfg):
        specs = [SignalSpec(m, s, "xtok") for m in self._span_models(cfg) for s in SIDES]
        return specs + (list(REF_LOGPS) if cfg.anchor == "student" else [])

    def rewards(self, batch: LossBatch, cfg, side: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(r(x, y) per sequence of `side`, the weights of its rows in spans)."""
        p = batch.policy[side]
        xs = {m: batch.signal(m, "xtok", side) for m in self._span_models(cfg)}
        x = next(iter(xs.values()))
        for m, other in xs.items():
            if not (torch.equal(other["first"].bool(), x["first"].bool()) and torch.equal(other["group"], x["group"])):
                raise BenchError(f"the aligned spans of '{m}' differ from the other teachers' on {side}; rebuild the "
                                 "cache (`bench cache verify`)")
        lp = p.token_logps()
        dt = work_dtype(p, x["span_logp"])
        if cfg.weights == "contrast":
            d = xs["dpo_teacher"]["span_logp"].to(dt) - xs["rdpo_teacher"]["span_logp"].to(dt)
            sign = 1.0 if side == "chosen" else -1.0
            w = importance_weights(d, sign, cfg.mu, cfg.k, cfg.clamp_low, cfg.clamp_high, cfg.round_weights)
        else:
            w = torch.full_like(x["span_logp"], cfg.k, dtype=dt)
        if cfg.anchor == "student":
            ref = batch.signal("reference", "logps", side)["logps"]
            return span_margins(lp, p.seg, p.n_seq, x, w, None, ref)
        return span_margins(lp, p.seg, p.n_seq, x, w, xs[cfg.anchor]["span_logp"], None)

    def loss(self, batch: LossBatch, cfg):
        r_w, w_w = self.rewards(batch, cfg, "chosen")
        r_l, w_l = self.rewards(batch, cfg, "rejected")
        losses = -F.logsigmoid(cfg.beta * (r_w - r_l))
        margin = (r_w - r_l).detach()
        mean_w = lambda w: (w.sum() / (w > 0).sum().clamp(min=1)).item()
        return losses.mean(), {"reward_acc": (margin > 0).float().mean().item(), "margin": margin.mean().item(),
                               "weight_chosen": mean_w(w_w.detach()), "weight_rejected": mean_w(w_l.detach())}

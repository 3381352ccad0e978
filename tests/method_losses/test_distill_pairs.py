"""Pair-based distillation baselines (PLaD, DDPO, DPKD): independent float64 dense full-vocabulary computations,
hand-worked values, declaration checks and gradcheck w.r.t. the policy logits. No model: LossBatch built by hand.
The token-level baselines and the settings checks of all seven: tests/method_losses/test_distill.py."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from bench.method import LossBatch
from distill_kit import (D, dense_kl, logps_signal, packed, seqmean, seqsum, teacher_logits, tok_logp, topk_signal,
                         with_logits)
from methods.ddpo import DDPO, ddpo_loss, implicit_reward
from methods.dpkd import DPKD, dpkd_pair_loss
from methods.plad import PLaD, plad_calibration_loss

pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------- PLaD
def pair_batch(V=6, seed=20, lw=(3, 1, 2), ll=(2, 2, 4), sides=("chosen", "rejected")):
    return LossBatch(policy={sides[0]: packed(lw, V, seed), sides[1]: packed(ll, V, seed + 1)})


def test_plad_hand_and_independent():
    t = lambda x: torch.tensor([x], dtype=D)  # noqa: E731
    assert plad_calibration_loss(t(-1.0), t(-1.5), 1.0).item() == pytest.approx(0.5)
    assert plad_calibration_loss(t(-1.0), t(-3.0), 1.0).item() == 0.0
    batch = pair_batch()
    pw, pl = batch.policy["chosen"], batch.policy["rejected"]
    loss, _ = PLaD().loss(batch, PLaD().make_config({"delta": 2.0, "sft_weight": 0.5}))
    lw, ll = seqmean(tok_logp(pw), pw), seqmean(tok_logp(pl), pl)
    want = 0.5 * -tok_logp(pw).mean() + torch.clamp(2.0 - lw + ll, min=0).mean()
    assert loss.item() == pytest.approx(want.item(), abs=1e-10)


def test_plad_pseudo_pairs():
    m = PLaD()
    cfg = m.make_config({"pairs": "pseudo"})
    assert m.sides(cfg) == ("gen:dpo_teacher", "gen:sft_student") and m.signals(cfg) == []
    batch = pair_batch(sides=("gen:dpo_teacher", "gen:sft_student"))
    loss, _ = m.loss(batch, cfg)
    pw, pl = batch.policy["gen:dpo_teacher"], batch.policy["gen:sft_student"]
    want = -tok_logp(pw).mean() + torch.clamp(1.0 - seqmean(tok_logp(pw), pw) + seqmean(tok_logp(pl), pl), 0).mean()
    assert loss.item() == pytest.approx(want.item(), abs=1e-10)


@pytest.mark.parametrize("side", ["chosen", "rejected"])
def test_plad_gradcheck(side):
    batch = pair_batch(V=5, lw=(2, 1), ll=(1, 2), seed=22)
    cfg = PLaD().make_config({"delta": 10.0})  # large margin keeps every pair off the hinge's kink
    assert torch.autograd.gradcheck(lambda z: PLaD().loss(with_logits(batch, side, z), cfg)[0],
                                    (batch.policy[side].logits,))


# ---------------------------------------------------------------- DDPO
def ddpo_batch(V=6, seed=30):
    batch = pair_batch(V=V, seed=seed)
    g = torch.Generator().manual_seed(seed + 5)
    for side in ("chosen", "rejected"):
        n = batch.policy[side].labels.numel()
        for model in ("reference", "dpo_teacher", "ref_teacher"):
            batch.signals[f"{model}.logps.{side}"] = {"logps": -torch.rand(n, generator=g, dtype=torch.float32) * 4}
    return batch


def test_ddpo_hand_and_independent():
    t = lambda x: torch.tensor([x], dtype=D)  # noqa: E731
    # student margin β·((−2+3) − (−5+4)) = 0.5·2 = 1; teacher margin 0.25 → (0.75)²
    assert ddpo_loss(t(-2.0), t(-5.0), t(-3.0), t(-4.0), t(0.5), t(0.25), 0.5).item() == pytest.approx(0.5625)
    assert implicit_reward(t(-2.0), t(-3.0), 0.1).item() == pytest.approx(0.1)
    batch = ddpo_batch()
    cfg = DDPO().make_config({"beta": 0.2, "beta_t": 0.3})
    loss, m = DDPO().loss(batch, cfg)
    s = {}
    for side in ("chosen", "rejected"):
        p = batch.policy[side]
        sig = lambda mod: seqsum(batch.signals[f"{mod}.logps.{side}"]["logps"].double(), p)  # noqa: E731
        s[side] = (seqsum(tok_logp(p), p), sig("reference"), 0.3 * (sig("dpo_teacher") - sig("ref_teacher")))
    (pw, rw, tw), (pl, rl, tlr) = s["chosen"], s["rejected"]
    want = ((0.2 * ((pw - rw) - (pl - rl)) - (tw - tlr)) ** 2).mean()
    assert loss.item() == pytest.approx(want.item(), abs=1e-9)
    assert m["teacher_margin"] == pytest.approx((tw - tlr).mean().item(), abs=1e-9)
    assert set(x.name for x in DDPO().signals(cfg)) == {f"{mod}.logps.{sd}" for mod in
                                                        ("reference", "dpo_teacher", "ref_teacher")
                                                        for sd in ("chosen", "rejected")}


@pytest.mark.parametrize("side", ["chosen", "rejected"])
def test_ddpo_gradcheck(side):
    batch = ddpo_batch(V=4, seed=31)
    batch.policy = {"chosen": packed((2, 1, 1), 4, 40), "rejected": packed((1, 1, 2), 4, 41)}
    for sd in ("chosen", "rejected"):
        n = batch.policy[sd].labels.numel()
        for mod in ("reference", "dpo_teacher", "ref_teacher"):
            batch.signals[f"{mod}.logps.{sd}"] = {"logps": -torch.arange(1, n + 1, dtype=torch.float32) * 0.3}
    cfg = DDPO().make_config({"beta": 0.5})
    assert torch.autograd.gradcheck(lambda z: DDPO().loss(with_logits(batch, side, z), cfg)[0],
                                    (batch.policy[side].logits,))


# ---------------------------------------------------------------- DPKD
def dpkd_batch(V=6, seed=50, k=None, sides=("chosen", "rejected"), teacher="dpo_teacher"):
    batch = pair_batch(V=V, seed=seed, sides=sides)
    tls = {}
    for i, side in enumerate(sides):
        p = batch.policy[side]
        tl = teacher_logits(p.labels.numel(), V, seed + 10 + i)
        tls[side] = tl
        batch.signals[f"{teacher}.logps.{side}"] = {"logps": logps_signal(tl, p.labels)["logps"].float()}
    batch.signals[f"{teacher}.topk.{sides[0]}"] = topk_signal(tls[sides[0]], k or V - 1)
    return batch, tls


def dense_reverse_kl(p_logits, q_logits):
    return dense_kl(q_logits, p_logits)  # KL(softmax(q) || softmax(p))


def test_dpkd_independent_dense():
    batch, tls = dpkd_batch()
    cfg = DPKD().make_config()
    assert (cfg.beta, cfg.alpha, cfg.sft_weight) == (0.1, 0.1, 0.0)
    loss, m = DPKD().loss(batch, cfg)
    pw, pl = batch.policy["chosen"], batch.policy["rejected"]
    tw, tlr = seqsum(logps_signal(tls["chosen"], pw.labels)["logps"], pw), \
        seqsum(logps_signal(tls["rejected"], pl.labels)["logps"], pl)
    h = (seqsum(tok_logp(pw), pw) - seqsum(tok_logp(pl), pl)) - (tw - tlr)
    rkl = dense_reverse_kl(tls["chosen"], pw.logits).mean()
    want = -F.logsigmoid(0.1 * h).mean() + 0.1 * rkl
    assert loss.item() == pytest.approx(want.item(), abs=1e-6)  # teacher logps signal is float32
    assert m["reverse_kl"] == pytest.approx(rkl.item(), abs=1e-6)
    # sft term and hand value of the pair loss
    loss2, _ = DPKD().loss(batch, DPKD().make_config({"sft_weight": 1.0}))
    assert loss2.item() == pytest.approx((want - tok_logp(pw).mean()).item(), abs=1e-6)
    t = lambda x: torch.tensor([x], dtype=D)  # noqa: E731
    assert dpkd_pair_loss(t(-2.0), t(-4.0), t(-3.0), t(-3.0), 0.5).item() == pytest.approx(math.log1p(math.exp(-1)))


def test_dpkd_declarations():
    m = DPKD()
    assert [s.name for s in m.signals(m.make_config())] == ["dpo_teacher.logps.chosen", "dpo_teacher.logps.rejected",
                                                           "dpo_teacher.topk.chosen"]
    assert [s.name for s in m.signals(m.make_config({"alpha": 0}))] == ["dpo_teacher.logps.chosen",
                                                                       "dpo_teacher.logps.rejected"]
    cfg = m.make_config({"pairs": "pseudo"})
    assert m.sides(cfg) == ("gen:dpo_teacher", "gen:sft_student")
    assert [s.name for s in m.signals(cfg)] == ["dpo_teacher.logps.gen:dpo_teacher",
                                                "dpo_teacher.logps.gen:sft_student", "dpo_teacher.topk.gen:dpo_teacher"]
    batch, _ = dpkd_batch(sides=("gen:dpo_teacher", "gen:sft_student"))
    loss, _ = m.loss(batch, cfg)
    assert torch.isfinite(loss)


@pytest.mark.parametrize("side", ["chosen", "rejected"])
def test_dpkd_gradcheck(side):
    batch, _ = dpkd_batch(V=5, seed=55, k=2)
    batch.policy = {"chosen": batch.policy["chosen"], "rejected": batch.policy["rejected"]}
    cfg = DPKD().make_config({"beta": 0.6, "alpha": 0.4, "sft_weight": 0.3})
    assert torch.autograd.gradcheck(lambda z: DPKD().loss(with_logits(batch, side, z), cfg)[0],
                                    (batch.policy[side].logits,))

"""Preference-baseline losses (SFT, DPO, RPO, SimPO, WPO, TDPO): hand-worked float64 values, independent float64
re-computations, settings validation and gradcheck w.r.t. the policy logits. No model: LossBatch built by hand."""
from __future__ import annotations

import math

import pytest
import torch

from bench.errors import BenchError
from bench.method import LossBatch, SignalSpec
from bench.tensors import Packed
from methods.dpo import DPO, dpo_loss, sequence_logps
from methods.rpo import RPO
from methods.sft import SFT, sft_loss
from methods.simpo import SimPO, simpo_loss
from methods.tdpo import TDPO, sequence_kl, tdpo_loss
from methods.wpo import WPO, log_sum_sq_probs, wpo_log_weight, wpo_weights

D = torch.float64


pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------- helpers (independent of the code under test)
def packed(lengths, V, seed, scale=2.0, logits=None, labels=None):
    g = torch.Generator().manual_seed(seed)
    N = sum(lengths)
    if logits is None:
        logits = torch.randn(N, V, generator=g, dtype=D) * scale
    if labels is None:
        labels = torch.randint(0, V, (N,), generator=g)
    seg = torch.repeat_interleave(torch.arange(len(lengths)), torch.tensor(lengths))
    return Packed(logits.clone().requires_grad_(True), labels, seg, len(lengths))


def rows(p: Packed, b: int):
    idx = [i for i in range(p.seg.numel()) if int(p.seg[i]) == b]
    return p.logits[idx], p.labels[idx]


def naive_logp(logits_row, label):
    """log softmax by the textbook formula, one row at a time."""
    z = logits_row
    return float(z[label]) - math.log(sum(math.exp(float(v)) for v in z))


def naive_seq(p: Packed, b: int, mean=False):
    lg, lb = rows(p, b)
    vals = [naive_logp(lg[i].detach(), int(lb[i])) for i in range(lb.numel())]
    return sum(vals) / len(vals) if mean else sum(vals)


def ref_logps_signal(p: Packed, seed):
    g = torch.Generator().manual_seed(seed)
    return {"logps": -torch.rand(p.labels.numel(), generator=g, dtype=torch.float32) * 3}


def pref_batch(V=7, seed=0, lengths_w=(3, 1, 4), lengths_l=(2, 5, 1)):
    pw, pl = packed(lengths_w, V, seed), packed(lengths_l, V, seed + 1)
    sig = {SignalSpec("reference", "chosen", "logps").name: ref_logps_signal(pw, seed + 2),
           SignalSpec("reference", "rejected", "logps").name: ref_logps_signal(pl, seed + 3)}
    return LossBatch(policy={"chosen": pw, "rejected": pl}, signals=sig)


def seq_ref(batch, side, b):
    p = batch.policy[side]
    lp = batch.signals[f"reference.logps.{side}"]["logps"]
    return sum(float(lp[i]) for i in range(p.seg.numel()) if int(p.seg[i]) == b)


def log_sigmoid(x):
    return -math.log1p(math.exp(-x)) if x > 0 else x - math.log1p(math.exp(x))


def with_logits(batch, side, logits):
    """Copy of `batch` whose `side` policy logits are `logits` (for gradcheck closures)."""
    p = batch.policy[side]
    pol = dict(batch.policy)
    pol[side] = Packed(logits, p.labels, p.seg, p.n_seq)
    return LossBatch(policy=pol, signals=batch.signals, ref=batch.ref)


# ---------------------------------------------------------------- SFT
def test_sft_hand_values():
    # uniform logits over V=4: every token has log-prob −log 4
    p = packed([2, 1], 4, 0, logits=torch.zeros(3, 4, dtype=D), labels=torch.tensor([0, 3, 1]))
    assert sft_loss(p).item() == pytest.approx(math.log(4), abs=1e-12)
    # one row [log 3, 0] with label 0: p = 3/4
    p = packed([1], 2, 0, logits=torch.tensor([[math.log(3.0), 0.0]], dtype=D), labels=torch.tensor([0]))
    assert sft_loss(p).item() == pytest.approx(-math.log(0.75), abs=1e-12)


def test_sft_is_token_mean_not_sequence_mean():
    p = packed([1, 4], 5, 3)
    want = -sum(naive_logp(p.logits[i].detach(), int(p.labels[i])) for i in range(5)) / 5
    assert sft_loss(p).item() == pytest.approx(want, abs=1e-10)
    loss, m = SFT().loss(LossBatch(policy={"chosen": p}), SFT().make_config())
    assert loss.item() == pytest.approx(want, abs=1e-10) and m["nll"] == pytest.approx(want, abs=1e-10)


def test_sft_gradcheck():
    p = packed([2, 3], 6, 4)
    assert torch.autograd.gradcheck(lambda z: sft_loss(Packed(z, p.labels, p.seg, p.n_seq)), (p.logits,))


# ---------------------------------------------------------------- DPO
def test_dpo_hand_values():
    t = lambda x: torch.tensor([x], dtype=D)  # noqa: E731
    # policy−ref margins +1 (chosen) and −1 (rejected), β = 0.5 → −log σ(1)
    got = dpo_loss(t(-2.0), t(-5.0), t(-3.0), t(-4.0), 0.5)
    assert got.item() == pytest.approx(math.log1p(math.exp(-1.0)), abs=1e-12)
    # zero margin → log 2 for any β
    assert dpo_loss(t(-1.0), t(-2.0), t(-1.0), t(-2.0), 7.0).item() == pytest.approx(math.log(2), abs=1e-12)


def test_dpo_sequence_logps_and_loss_independent():
    batch = pref_batch()
    pi_w, ref_w = sequence_logps(batch, "chosen")
    for b in range(3):
        assert pi_w[b].item() == pytest.approx(naive_seq(batch.policy["chosen"], b), abs=1e-10)
        assert ref_w[b].item() == pytest.approx(seq_ref(batch, "chosen", b), abs=1e-6)
    cfg = DPO().make_config({"beta": 0.3})
    loss, m = DPO().loss(batch, cfg)
    want = []
    for b in range(3):
        h = (naive_seq(batch.policy["chosen"], b) - seq_ref(batch, "chosen", b)) - \
            (naive_seq(batch.policy["rejected"], b) - seq_ref(batch, "rejected", b))
        want.append(-log_sigmoid(0.3 * h))
    assert loss.item() == pytest.approx(sum(want) / 3, abs=1e-9)
    assert 0.0 <= m["reward_acc"] <= 1.0


@pytest.mark.parametrize("side", ["chosen", "rejected"])
def test_dpo_gradcheck(side):
    batch = pref_batch(V=5, lengths_w=(2, 1), lengths_l=(1, 3))
    cfg = DPO().make_config({"beta": 0.7})
    assert torch.autograd.gradcheck(lambda z: DPO().loss(with_logits(batch, side, z), cfg)[0],
                                    (batch.policy[side].logits,))


# ---------------------------------------------------------------- RPO (DPO + α · NLL of the chosen side)
@pytest.mark.parametrize("nll_mean", ["response", "tokens"])
def test_rpo_independent(nll_mean):
    lw = (3, 1, 4)
    batch = pref_batch(lengths_w=lw)
    beta, alpha = 0.3, 0.7
    loss, m = RPO().loss(batch, RPO().make_config({"beta": beta, "alpha": alpha, "nll_mean": nll_mean}))
    dpo = sum(-log_sigmoid(beta * ((naive_seq(batch.policy["chosen"], b) - seq_ref(batch, "chosen", b))
                                   - (naive_seq(batch.policy["rejected"], b) - seq_ref(batch, "rejected", b))))
              for b in range(3)) / 3
    seq_w = [naive_seq(batch.policy["chosen"], b) for b in range(3)]
    nll = -sum(s / n for s, n in zip(seq_w, lw)) / 3 if nll_mean == "response" else -sum(seq_w) / sum(lw)
    assert loss.item() == pytest.approx(dpo + alpha * nll, abs=1e-9)
    # α = 0 is DPO exactly; the two NLL means differ when lengths differ (so the option is not a no-op)
    assert RPO().loss(batch, RPO().make_config({"beta": beta, "alpha": 0.0}))[0].item() == \
        pytest.approx(DPO().loss(batch, DPO().make_config({"beta": beta}))[0].item(), abs=1e-12)
    assert abs(-sum(s / n for s, n in zip(seq_w, lw)) / 3 + sum(seq_w) / sum(lw)) > 1e-3
    assert m["nll"] == pytest.approx(-sum(s / n for s, n in zip(seq_w, lw)) / 3, abs=1e-9)
    with pytest.raises(BenchError, match="nll_mean"):
        RPO().make_config({"nll_mean": "sequence"}).validate()


@pytest.mark.parametrize("side", ["chosen", "rejected"])
def test_rpo_gradcheck(side):
    batch = pref_batch(V=5, lengths_w=(2, 1), lengths_l=(1, 3))
    cfg = RPO().make_config({"beta": 0.7, "alpha": 1.3})
    assert torch.autograd.gradcheck(lambda z: RPO().loss(with_logits(batch, side, z), cfg)[0],
                                    (batch.policy[side].logits,))


# ---------------------------------------------------------------- SimPO
def test_simpo_hand_values():
    t = lambda x: torch.tensor([x], dtype=D)  # noqa: E731
    # β=2, ℓ̄_w = −1, ℓ̄_l = −2, γ = 1 → −log σ(2·1 − 1) = log(1 + e^{−1})
    assert simpo_loss(t(-1.0), t(-2.0), 2.0, 1.0).item() == pytest.approx(math.log1p(math.exp(-1)), abs=1e-12)


def test_simpo_plugin_independent():
    batch = pref_batch(seed=5)
    cfg = SimPO().make_config()
    assert (cfg.beta, cfg.gamma) == (2.0, 1.0)
    loss, _ = SimPO().loss(batch, cfg)
    want = [-log_sigmoid(2.0 * naive_seq(batch.policy["chosen"], b, mean=True)
                         - 2.0 * naive_seq(batch.policy["rejected"], b, mean=True) - 1.0) for b in range(3)]
    assert loss.item() == pytest.approx(sum(want) / 3, abs=1e-9)
    assert SimPO().signals(cfg) == [] and SimPO().reference(cfg) is None


@pytest.mark.parametrize("side", ["chosen", "rejected"])
def test_simpo_gradcheck(side):
    batch = pref_batch(V=5, lengths_w=(2, 1), lengths_l=(1, 3), seed=8)
    cfg = SimPO().make_config({"beta": 1.5, "gamma": 0.3})
    assert torch.autograd.gradcheck(lambda z: SimPO().loss(with_logits(batch, side, z), cfg)[0],
                                    (batch.policy[side].logits,))


# ---------------------------------------------------------------- WPO
def naive_m(p: Packed, b: int):
    lg, lb = rows(p, b)
    vals = []
    for i in range(lb.numel()):
        z = [float(v) for v in lg[i].detach()]
        zs = sum(math.exp(v) for v in z)
        probs = [math.exp(v) / zs for v in z]
        vals.append(math.log(probs[int(lb[i])]) - math.log(sum(q * q for q in probs)))
    return sum(vals) / len(vals)


def test_wpo_log_sum_sq_probs_hand():
    # uniform over 4 → Σp² = 1/4;  [log 3, 0] → p = (3/4, 1/4), Σp² = 10/16
    z = torch.tensor([[0.0, 0.0, 0.0, 0.0]], dtype=D)
    assert log_sum_sq_probs(z).item() == pytest.approx(math.log(0.25), abs=1e-12)
    z = torch.tensor([[math.log(3.0), 0.0]], dtype=D)
    assert log_sum_sq_probs(z).item() == pytest.approx(math.log(10 / 16), abs=1e-12)


def test_wpo_weights_and_loss_independent():
    batch = pref_batch(seed=11, V=6)
    pw, pl = batch.policy["chosen"], batch.policy["rejected"]
    m_w, m_l = wpo_log_weight(pw), wpo_log_weight(pl)
    assert not m_w.requires_grad
    for b in range(3):
        assert m_w[b].item() == pytest.approx(naive_m(pw, b), abs=1e-10)
        assert m_l[b].item() == pytest.approx(naive_m(pl, b), abs=1e-10)
    raw = wpo_weights(m_w, m_l, clamp=False)
    assert torch.allclose(wpo_weights(m_w, m_l), raw.clamp(max=1.0))
    for clamp in (True, False):
        cfg = WPO().make_config({"beta": 0.4, "clamp_weight": clamp})
        loss, m = WPO().loss(batch, cfg)
        want = 0.0
        for b in range(3):
            h = (naive_seq(pw, b) - seq_ref(batch, "chosen", b)) - (naive_seq(pl, b) - seq_ref(batch, "rejected", b))
            w = math.exp(naive_m(pw, b) + naive_m(pl, b))
            want += -log_sigmoid(0.4 * h) * (min(1.0, w) if clamp else w) / 3
        assert loss.item() == pytest.approx(want, abs=1e-9)


def test_wpo_clamp_binds_for_peaked_policy():
    # a policy that puts most mass on its labels has log p_y > log Σp², so exp(m) > 1 and the clamp binds
    V, lab = 5, torch.tensor([1, 2, 0])
    z = torch.full((3, V), -2.0, dtype=D)
    z[torch.arange(3), lab] = 3.0
    p = packed([3], V, 0, logits=z, labels=lab)
    m = wpo_log_weight(p)
    assert m.item() > 0
    assert wpo_weights(m, m).item() == 1.0 and wpo_weights(m, m, clamp=False).item() > 1.0


def test_wpo_weight_is_stop_gradient():
    batch = pref_batch(seed=12, V=5)
    cfg = WPO().make_config({"beta": 0.5, "clamp_weight": False})
    loss, _ = WPO().loss(batch, cfg)
    g_wpo = torch.autograd.grad(loss, batch.policy["chosen"].logits)[0]
    pw, pl = batch.policy["chosen"], batch.policy["rejected"]
    w = wpo_weights(wpo_log_weight(pw), wpo_log_weight(pl), clamp=False)
    pi_w, ref_w = sequence_logps(batch, "chosen")
    pi_l, ref_l = sequence_logps(batch, "rejected")
    g_manual = torch.autograd.grad((dpo_loss(pi_w, pi_l, ref_w, ref_l, 0.5) * w).mean(), pw.logits)[0]
    assert torch.allclose(g_wpo, g_manual, atol=1e-12)


@pytest.mark.parametrize("side", ["chosen", "rejected"])
def test_wpo_gradcheck(side):
    # the weight is a stop-gradient constant, so gradcheck the loss with the weight frozen at its value for the
    # unperturbed logits (finite differences would otherwise see the weight move); test_wpo_weight_is_stop_gradient
    # checks that the plugin's autograd gradient is exactly w·∇DPO.
    batch = pref_batch(V=5, lengths_w=(2, 1), lengths_l=(1, 3), seed=13)
    pw, pl = batch.policy["chosen"], batch.policy["rejected"]
    w0 = wpo_weights(wpo_log_weight(pw), wpo_log_weight(pl), clamp=False)

    def f(z):
        b = with_logits(batch, side, z)
        pi_w, ref_w = sequence_logps(b, "chosen")
        pi_l, ref_l = sequence_logps(b, "rejected")
        return (dpo_loss(pi_w, pi_l, ref_w, ref_l, 0.9) * w0).mean()

    assert torch.autograd.gradcheck(f, (batch.policy[side].logits,))


# ---------------------------------------------------------------- TDPO
def tdpo_batch(V=6, seed=20, lengths_w=(3, 2), lengths_l=(1, 4), same=False):
    pw, pl = packed(lengths_w, V, seed), packed(lengths_l, V, seed + 1)
    rw = pw if same else packed(lengths_w, V, seed + 2, labels=pw.labels)
    rl = pl if same else packed(lengths_l, V, seed + 3, labels=pl.labels)
    ref = {"chosen": Packed(rw.logits.detach().clone(), pw.labels, pw.seg, pw.n_seq),
           "rejected": Packed(rl.logits.detach().clone(), pl.labels, pl.seg, pl.n_seq)}
    return LossBatch(policy={"chosen": pw, "rejected": pl}, ref=ref)


def naive_kl_seq(ref: Packed, pol: Packed, b: int):
    total = 0.0
    for i in range(pol.seg.numel()):
        if int(pol.seg[i]) != b:
            continue
        r = [float(v) for v in ref.logits[i]]
        q = [float(v) for v in pol.logits[i].detach()]
        rz, qz = sum(math.exp(v) for v in r), sum(math.exp(v) for v in q)
        total += sum(math.exp(a) / rz * ((a - math.log(rz)) - (c - math.log(qz))) for a, c in zip(r, q))
    return total


def test_tdpo_declares_online_reference_and_no_signal():
    cfg = TDPO().make_config()
    assert TDPO().reference(cfg) == "online" and TDPO().signals(cfg) == []
    assert (cfg.alpha, cfg.beta, cfg.variant) == (0.5, 0.1, "tdpo2")
    import methods.tdpo as mod
    assert "online" in mod.__doc__.lower()


def test_tdpo_policy_equals_reference_gives_log2():
    batch = tdpo_batch(same=True)
    loss, m = TDPO().loss(batch, TDPO().make_config())
    assert loss.item() == pytest.approx(math.log(2), abs=1e-12)
    assert m["seq_kl_chosen"] == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("variant", ["tdpo2", "tdpo1"])
def test_tdpo_independent(variant):
    batch = tdpo_batch()
    beta, alpha = 0.3, 0.7
    loss, _ = TDPO().loss(batch, TDPO().make_config({"beta": beta, "alpha": alpha, "variant": variant}))
    pw, pl, rw, rl = batch.policy["chosen"], batch.policy["rejected"], batch.ref["chosen"], batch.ref["rejected"]
    want = 0.0
    for b in range(2):
        u = beta * ((naive_seq(pw, b) - naive_seq(rw, b)) - (naive_seq(pl, b) - naive_seq(rl, b)))
        dw, dl = naive_kl_seq(rw, pw, b), naive_kl_seq(rl, pl, b)
        delta = beta * alpha * (dl - dw) if variant == "tdpo2" else beta * (dl - dw)
        want += -log_sigmoid(u - delta) / 2
    assert loss.item() == pytest.approx(want, abs=1e-9)
    kl = sequence_kl(rw.logits, pw.logits, pw.seg, pw.n_seq)
    assert kl[1].item() == pytest.approx(naive_kl_seq(rw, pw, 1), abs=1e-10)


def test_tdpo2_stops_gradient_through_chosen_kl():
    t = lambda *x: torch.tensor(x, dtype=D, requires_grad=True)  # noqa: E731
    kl_w = t(0.4)
    tdpo_loss(t(-1.0), t(-2.0), t(-1.5), t(-1.0), kl_w, t(0.9), 0.1, 0.5, "tdpo2").sum().backward()
    assert kl_w.grad is None or kl_w.grad.item() == 0.0
    kl_w = t(0.4)
    tdpo_loss(t(-1.0), t(-2.0), t(-1.5), t(-1.0), kl_w, t(0.9), 0.1, 0.5, "tdpo1").sum().backward()
    assert kl_w.grad.item() != 0.0


@pytest.mark.parametrize("side,variant", [("rejected", "tdpo2"), ("chosen", "tdpo1"), ("rejected", "tdpo1")])
def test_tdpo_gradcheck(side, variant):
    batch = tdpo_batch(V=4, lengths_w=(2, 1), lengths_l=(1, 2), seed=30)
    cfg = TDPO().make_config({"beta": 0.8, "alpha": 0.5, "variant": variant})
    assert torch.autograd.gradcheck(lambda z: TDPO().loss(with_logits(batch, side, z), cfg)[0],
                                    (batch.policy[side].logits,))


def test_tdpo2_gradcheck_chosen_with_frozen_kl():
    # TDPO2 stops the gradient of D(y_w): gradcheck the chosen side with D(y_w) frozen at its unperturbed value,
    # and check the plugin's autograd gradient equals that closure's.
    batch = tdpo_batch(V=4, lengths_w=(2, 1), lengths_l=(1, 2), seed=31)
    beta, alpha = 0.8, 0.5
    pw, pl, rw, rl = batch.policy["chosen"], batch.policy["rejected"], batch.ref["chosen"], batch.ref["rejected"]
    kl_w0 = sequence_kl(rw.logits, pw.logits, pw.seg, pw.n_seq).detach()
    kl_l = sequence_kl(rl.logits, pl.logits, pl.seg, pl.n_seq).detach()
    ref_w = torch.zeros(2, dtype=D).index_add(0, pw.seg, rw.token_logps())
    ref_l = torch.zeros(2, dtype=D).index_add(0, pl.seg, rl.token_logps())
    pi_l = torch.zeros(2, dtype=D).index_add(0, pl.seg, pl.token_logps()).detach()

    def f(z):
        pi_w = torch.zeros(2, dtype=D).index_add(0, pw.seg, Packed(z, pw.labels, pw.seg, 2).token_logps())
        return tdpo_loss(pi_w, pi_l, ref_w, ref_l, kl_w0, kl_l, beta, alpha, "tdpo2").mean()

    assert torch.autograd.gradcheck(f, (pw.logits,))
    cfg = TDPO().make_config({"beta": beta, "alpha": alpha})
    g_plugin = torch.autograd.grad(TDPO().loss(batch, cfg)[0], pw.logits)[0]
    g_closure = torch.autograd.grad(f(pw.logits), pw.logits)[0]
    assert torch.allclose(g_plugin, g_closure, atol=1e-12)


# ---------------------------------------------------------------- settings validation
@pytest.mark.parametrize("method,overrides", [
    (DPO, {"beta": -0.1}), (SimPO, {"beta": -1.0}), (SimPO, {"gamma": -0.5}), (WPO, {"beta": -1}),
    (TDPO, {"alpha": -0.1}), (TDPO, {"variant": "tdpo3"}), (TDPO, {"beta": "abc"}), (SimPO, {"nope": 1}),
    (WPO, {"clamp_weight": "maybe"}),
])
def test_invalid_settings_raise(method, overrides):
    with pytest.raises(BenchError):
        method().make_config(overrides)


def test_string_overrides_are_coerced():
    cfg = WPO().make_config({"beta": "0.2", "clamp_weight": "false"})
    assert cfg.beta == 0.2 and cfg.clamp_weight is False
    assert TDPO().make_config({"variant": "tdpo1"}).variant == "tdpo1"

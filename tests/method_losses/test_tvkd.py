"""TVKD plugin: every Table-5 value type and both reference forms against per-token loops over dense teacher logits
(the paper's formula, Φ(s_1) included), the exact drop of the first-state potential, action-dependent rewards used
per token, the telescoping fact (γ = 1 uses only terminal values; γ < 1 differs), the authors' recipe by hand,
gradcheck, declarations and settings."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bench.errors import BenchError
from bench.method import LossBatch, SignalSpec, build_config
from bench.registry import get_method
from bench.tensors import Packed
from methods.tvkd import ACTION_VALUE_TYPES as ACTION, TVKD, TVKDConfig, VALUE_TYPES, state_potential, state_shaping


pytestmark = pytest.mark.usefixtures("one_thread")



# ---------------------------------------------------------------- a hand-built batch with dense teacher logits


class Side:
    """One side of the batch: student Packed, frozen-reference log-probs, and the teacher's dense logits at every
    state s_1..s_{T+1} of every sequence (kept for the independent computation)."""

    def __init__(self, lengths, V, gen, prompt_states=None):
        n = sum(lengths)
        self.lengths, self.V = list(lengths), V
        self.seg = torch.repeat_interleave(torch.arange(len(lengths)), torch.tensor(lengths))
        self.packed = Packed(logits=(torch.randn(n, V, generator=gen, dtype=torch.float64) * 1.5).requires_grad_(True),
                             labels=torch.randint(0, V, (n,), generator=gen), seg=self.seg, n_seq=len(lengths))
        self.ref_logps = (torch.log_softmax(torch.randn(n, V, generator=gen), -1)
                          .gather(-1, self.packed.labels[:, None]).squeeze(-1))
        # teacher logits per state (list per sequence of T+1 rows); s_1 may be shared with the other side
        self.z = []
        for b, T in enumerate(lengths):
            zb = torch.randn(T + 1, V, generator=gen, dtype=torch.float64) * 2 + 3
            if prompt_states is not None:
                zb[0] = prompt_states[b]
            self.z.append(zb)

    def labels_of(self, b):
        start = sum(self.lengths[:b])
        return self.packed.labels[start:start + self.lengths[b]].tolist()

    def values(self, tau):
        """The cached values signal, computed from the dense teacher logits (torch, vectorised)."""
        z = torch.cat(self.z)
        vseg = torch.repeat_interleave(torch.arange(len(self.lengths)), torch.tensor(self.lengths) + 1)
        vpos = torch.cat([torch.arange(T + 1) for T in self.lengths])
        top2 = z.topk(2, -1).values
        labels = torch.cat([torch.tensor(self.labels_of(b) + [0]) for b in range(len(self.lengths))])
        z_label = z.gather(-1, labels[:, None]).squeeze(-1)
        z_label[vpos == torch.tensor(self.lengths)[vseg]] = float("nan")
        return {"v_soft": (tau * torch.logsumexp(z / tau, -1)).float(), "v_lse": torch.logsumexp(z, -1).float(),
                "v_max": z.max(-1).values.float(), "v_expect": (torch.softmax(z, -1) * z).sum(-1).float(),
                "v_margin": (top2[:, 0] - top2[:, 1]).float(), "z_label": z_label.float(), "vseg": vseg, "vpos": vpos}

    def topk(self, k):
        """dpo_teacher.topk signal at the token states s_1..s_T."""
        z = torch.cat([zb[:-1] for zb in self.z])
        vals, ids = torch.log_softmax(z, -1).topk(k, -1)
        vals = vals.half()
        return {"topk_ids": ids.int(), "topk_logps": vals, "tail": (1 - vals.double().exp().sum(-1)).float()}


def make(seed=0, V=8, lengths_w=(3, 4), lengths_l=(5, 2), shared_prompt=True):
    g = torch.Generator().manual_seed(seed)
    w = Side(lengths_w, V, g)
    l = Side(lengths_l, V, g, prompt_states=[zb[0] for zb in w.z] if shared_prompt else None)
    return w, l


def batch_of(w: Side, l: Side, tau=2.0, k=None) -> LossBatch:
    sig = {}
    for side, s in (("chosen", w), ("rejected", l)):
        sig[SignalSpec("reference", side, "logps").name] = {"logps": s.ref_logps}
        sig[SignalSpec("dpo_teacher", side, "values").name] = s.values(tau)
        if k:
            sig[SignalSpec("dpo_teacher", side, "topk").name] = s.topk(k)
    return LossBatch(policy={"chosen": w.packed, "rejected": l.packed}, signals=sig)


# ---------------------------------------------------------------- independent float64 math (loops, numpy)


def f32(x):
    return float(np.float32(x))  # the cache stores values as float32


def phi_by_hand(z: np.ndarray, value_type, tau):
    """State potential of one state from its dense teacher logits (Table 5), through the float32 cache fields."""
    lse = math.log(sum(math.exp(v) for v in z))
    top1, top2 = sorted(z)[-1], sorted(z)[-2]
    if value_type == "soft":
        return f32(tau * math.log(sum(math.exp(v / tau) for v in z)))
    if value_type == "max":  # max_a π(a|s), a probability
        return math.exp(f32(top1) - f32(lse))
    if value_type == "expectation":
        return f32(sum(math.exp(v - lse) * v for v in z))
    if value_type == "margin":  # π(1) − π(2), from the cached top-1 logit, lse and top-1 − top-2 gap
        return math.exp(f32(top1) - f32(lse)) - math.exp(f32(top1) - f32(lse) - f32(top1 - top2))
    if value_type == "max_logprob":
        return f32(top1) - f32(lse)
    if value_type == "logit_margin":
        return f32(top1 - top2)
    raise AssertionError(value_type)


def aux_by_hand(z: np.ndarray, label, value_type):
    """Action-dependent auxiliary reward of the token taken at a state (Corollary 2.1)."""
    lse = math.log(sum(math.exp(v) for v in z))
    return f32(z[label]) if value_type == "logit" else f32(z[label]) - f32(lse)


def seq_rewards_by_hand(s: Side, alpha, beta, tau, gamma, value_type, reference="student"):
    """Σ_t r_t per sequence as the paper writes it: ψ_t = γΦ(s_{t+1}) − Φ(s_t) INCLUDING Φ(s_1)."""
    out = []
    logits = s.packed.logits.detach().numpy()
    row = 0
    for b, T in enumerate(s.lengths):
        labels = s.labels_of(b)
        z = s.z[b].numpy()
        total = 0.0
        for t in range(T):
            zt = logits[row]
            logpi = zt[labels[t]] - math.log(sum(math.exp(v) for v in zt))
            if value_type in ACTION:
                aux = aux_by_hand(z[t], labels[t], value_type)
            else:
                aux = gamma * phi_by_hand(z[t + 1], value_type, tau) - phi_by_hand(z[t], value_type, tau)
            ref = float(s.ref_logps[row]) if reference == "student" else 0.0
            total += beta * (logpi - ref) - alpha * aux
            row += 1
        out.append(total)
    return out


def loss_by_hand(w, l, alpha=0.7, beta=0.1, tau=2.0, gamma=1.0, value_type="soft", reference="student"):
    rw = seq_rewards_by_hand(w, alpha, beta, tau, gamma, value_type, reference)
    rl = seq_rewards_by_hand(l, alpha, beta, tau, gamma, value_type, reference)
    return float(np.mean([math.log1p(math.exp(-(a - b))) for a, b in zip(rw, rl)]))


# ---------------------------------------------------------------- tests


CASES = [(v, g) for v in VALUE_TYPES for g in ((1.0, 0.8) if v not in ACTION else (1.0,))]


@pytest.mark.parametrize("value_type,gamma", CASES)
@pytest.mark.parametrize("reference", ["student", "none"])
def test_every_value_type_matches_hand_computation(value_type, gamma, reference):
    m = TVKD()
    cfg = m.make_config({"value_type": value_type, "gamma": gamma, "reference": reference})
    w, l = make(seed=1)
    batch = batch_of(w, l, tau=cfg.tau)
    if reference == "none":  # eq. 3 as printed needs no reference signal at all
        batch.signals = {k: v for k, v in batch.signals.items() if not k.startswith("reference.")}
    loss, _ = m.loss(batch, cfg)
    want = loss_by_hand(w, l, gamma=gamma, value_type=value_type, reference=reference)
    assert loss.item() == pytest.approx(want, rel=1e-9)


def test_soft_value_uses_tau_and_other_hyperparameters():
    m = TVKD()
    w, l = make(seed=2)
    cfg = m.make_config({"tau": "0.5", "alpha": "1.3", "beta": "0.4"})
    loss, _ = m.loss(batch_of(w, l, tau=0.5), cfg)
    assert loss.item() == pytest.approx(loss_by_hand(w, l, alpha=1.3, beta=0.4, tau=0.5), rel=1e-9)


@pytest.mark.parametrize("value_type", ["max", "margin"])
def test_max_and_margin_potentials_are_probabilities(value_type):
    # Table 5: max_a π(a|s) and π(1)(s) − π(2)(s) are probabilities, not log-probs or logit gaps
    w, _ = make(seed=11)
    v = w.values(2.0)
    phi = state_potential(v, value_type, torch.float64)
    p = torch.softmax(torch.cat(w.z), -1).sort(-1, descending=True).values
    want = p[:, 0] if value_type == "max" else p[:, 0] - p[:, 1]
    torch.testing.assert_close(phi, want, rtol=1e-5, atol=1e-6)
    assert (phi >= 0).all() and (phi <= 1).all()


@pytest.mark.parametrize("value_type", ["soft", "max", "margin", "expectation"])
@pytest.mark.parametrize("gamma", [1.0, 0.8])
def test_first_state_potential_is_dropped_exactly(value_type, gamma):
    # s_1 is shared by y_w and y_l but its value comes from two separate teacher passes: a different V(s_1) on one
    # side (other batching/padding/bf16) must not change the loss at all, for any discount
    m = TVKD()
    cfg = m.make_config({"value_type": value_type, "gamma": gamma})
    w, l = make(seed=12)
    batch = batch_of(w, l)
    loss, _ = m.loss(batch, cfg)
    v = batch.signals["dpo_teacher.values.rejected"]
    first = v["vpos"] == 0
    for key in ("v_soft", "v_lse", "v_max", "v_expect", "v_margin"):
        v[key] = torch.where(first, v[key] + 0.37, v[key])
    moved, _ = m.loss(batch, cfg)
    assert moved.item() == loss.item()
    # and the loss is the paper's (which includes −Φ(s_1), cancelling only when both sides agree on it)
    assert loss.item() == pytest.approx(loss_by_hand(w, l, gamma=gamma, value_type=value_type), rel=1e-9)


def test_with_no_discount_only_terminal_values_matter():
    # γ = 1: Σ_t ψ_t = V(s_{T+1}) once Φ(s_1) is dropped, so the loss is
    # −log σ(β[(log π_θ − log π_sref)(y_w) − (…)(y_l)] − α[V(s^w_{T+1}) − V(s^l_{T+1})])
    m = TVKD()
    cfg = m.make_config({})
    w, l = make(seed=3)
    batch = batch_of(w, l)
    loss, _ = m.loss(batch, cfg)

    def logratio(s: Side):
        lp = torch.log_softmax(s.packed.logits.detach(), -1).gather(-1, s.packed.labels[:, None]).squeeze(-1)
        return torch.zeros(len(s.lengths), dtype=torch.float64).index_add(0, s.seg, lp - s.ref_logps)

    def terminal(side):
        v = batch.signals[f"dpo_teacher.values.{side}"]
        s = w if side == "chosen" else l
        return v["v_soft"][v["vpos"] == torch.tensor(s.lengths)[v["vseg"]]].double()
    logits_ = 0.1 * (logratio(w) - logratio(l)) - 0.7 * (terminal("chosen") - terminal("rejected"))
    want = torch.nn.functional.softplus(-logits_).mean()
    assert loss.item() == pytest.approx(want.item(), rel=1e-9)
    # a discount breaks the telescoping: the loss moves away from the terminal-only formula
    discounted, _ = m.loss(batch, m.make_config({"gamma": 0.9}))
    assert abs(discounted.item() - want.item()) > 1e-3
    assert discounted.item() == pytest.approx(loss_by_hand(w, l, gamma=0.9), rel=1e-9)


def test_state_shaping_drops_only_the_first_state():
    w, _ = make(seed=4)
    v = w.values(2.0)
    phi = v["v_soft"].double()
    psi = state_shaping(phi, v["vseg"], v["vpos"], w.seg, len(w.lengths), gamma=1.0)
    sums = torch.zeros(len(w.lengths), dtype=torch.float64).index_add(0, w.seg, psi)
    last = v["vpos"] == torch.tensor(w.lengths)[v["vseg"]]
    torch.testing.assert_close(sums, phi[last], rtol=1e-12, atol=1e-12)


def test_action_dependent_rewards_are_per_token_not_telescoped():
    # logit and logprob differ by Σ_t log Z(s_t), which differs between y_w and y_l: different losses
    m = TVKD()
    w, l = make(seed=5)
    batch = batch_of(w, l)
    got = {vt: m.loss(batch, m.make_config({"value_type": vt}))[0].item() for vt in ACTION}
    assert abs(got["logit"] - got["logprob"]) > 1e-4
    # the pair logit is the unshaped one minus α·Σ_t aux_t over every token (not just the first one)
    lp, aux = {}, {}
    for side, s in (("chosen", w), ("rejected", l)):
        t = torch.log_softmax(s.packed.logits.detach(), -1).gather(-1, s.packed.labels[:, None]).squeeze(-1)
        lp[side] = torch.zeros(len(s.lengths), dtype=torch.float64).index_add(0, s.seg, t - s.ref_logps)
        aux[side] = torch.tensor([sum(aux_by_hand(s.z[b][t].numpy(), s.labels_of(b)[t], "logprob")
                                      for t in range(T)) for b, T in enumerate(s.lengths)], dtype=torch.float64)
    logit = 0.1 * (lp["chosen"] - lp["rejected"]) - 0.7 * (aux["chosen"] - aux["rejected"])
    assert got["logprob"] == pytest.approx(torch.nn.functional.softplus(-logit).mean().item(), rel=1e-9)


def test_authors_recipe_by_hand():
    # r_t = log q_θ(bin of y_t) − γ·H_θ(s_{t+1}) over the k+1 bins of the DPO teacher's top-k; H(s_{T+1}) = 0
    m = TVKD()
    w, l = make(seed=6, V=9)
    k = 4
    batch = batch_of(w, l, k=k)
    for gamma in (1.0, 0.5):
        cfg = m.make_config({"recipe": "authors", "gamma": gamma})
        loss, _ = m.loss(batch, cfg)
        seq = {}
        for side, s in (("chosen", w), ("rejected", l)):
            ids = batch.signals[f"dpo_teacher.topk.{side}"]["topk_ids"].tolist()
            lg, labels = s.packed.logits.detach().tolist(), s.packed.labels.tolist()
            lab, ent = [], []
            for z, top, y in zip(lg, ids, labels):
                lse = math.log(sum(math.exp(v) for v in z))
                q = [math.exp(z[i] - lse) for i in top]
                q_tail = sum(math.exp(z[j] - lse) for j in range(len(z)) if j not in top)
                bins = q + [q_tail]
                lab.append(math.log(q[top.index(y)]) if y in top else math.log(q_tail))
                ent.append(-sum(p * math.log(p) for p in bins))
            tot, row = [], 0
            for T in s.lengths:
                tot.append(sum(lab[row + t] - gamma * (ent[row + t + 1] if t + 1 < T else 0.0) for t in range(T)))
                row += T
            seq[side] = tot
        want = np.mean([math.log1p(math.exp(-(a - b))) for a, b in zip(seq["chosen"], seq["rejected"])])
        assert loss.item() == pytest.approx(want, rel=1e-10)
    # labels fall both inside and outside the top-k, so both branches of the label bin are exercised
    hit = torch.cat([(batch.signals[f"dpo_teacher.topk.{side}"]["topk_ids"] == s.packed.labels[:, None]).any(-1)
                     for side, s in (("chosen", w), ("rejected", l))])
    assert hit.any() and (~hit).any()


@pytest.mark.parametrize("overrides", [{}, {"value_type": "logprob"}, {"value_type": "margin", "gamma": 0.9},
                                       {"reference": "none"}, {"recipe": "authors"}])
def test_gradcheck_float64_on_plugin_loss(overrides):
    m = TVKD()
    cfg = m.make_config(overrides)
    w, l = make(seed=7, V=6, lengths_w=(2, 3), lengths_l=(3, 1))
    batch = batch_of(w, l, k=3)

    def f(lw, ll):
        b = LossBatch(policy={"chosen": Packed(lw, w.packed.labels, w.seg, w.packed.n_seq),
                              "rejected": Packed(ll, l.packed.labels, l.seg, l.packed.n_seq)}, signals=batch.signals)
        return m.loss(b, cfg)[0]
    assert torch.autograd.gradcheck(f, (w.packed.logits, l.packed.logits))


@pytest.mark.parametrize("overrides", [{}, {"value_type": "logit"}, {"recipe": "authors"}])
def test_bfloat16_logits_run_and_backprop(overrides):
    m = TVKD()
    w, l = make(seed=9)
    batch = batch_of(w, l, k=3)
    pol = {k: Packed(p.logits.detach().bfloat16().requires_grad_(True), p.labels, p.seg, p.n_seq)
           for k, p in batch.policy.items()}
    loss, _ = m.loss(LossBatch(policy=pol, signals=batch.signals), m.make_config(overrides))
    loss.backward()
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert pol["chosen"].logits.grad is not None and torch.isfinite(pol["chosen"].logits.grad.float()).all()
    want, _ = m.loss(batch, m.make_config(overrides))
    assert loss.item() == pytest.approx(want.item(), rel=0.05, abs=0.05)


def test_misaligned_values_raise():
    m = TVKD()
    w, l = make(seed=8)
    batch = batch_of(w, l)
    v = batch.signals["dpo_teacher.values.chosen"]
    batch.signals["dpo_teacher.values.chosen"] = {key: t[1:] for key, t in v.items()}  # one state short
    with pytest.raises(BenchError):
        m.loss(batch, m.make_config({}))


def test_signals_and_sides_follow_recipe():
    m = TVKD()
    cfg = m.make_config({})
    assert m.sides(cfg) == ("chosen", "rejected")
    assert {s.name for s in m.signals(cfg)} == {"reference.logps.chosen", "reference.logps.rejected",
                                                "dpo_teacher.values.chosen", "dpo_teacher.values.rejected"}
    assert len(m.signals(cfg)) == 4
    assert m.required_models(cfg) == {"reference", "dpo_teacher"}
    cfg = m.make_config({"reference": "none"})
    assert {s.name for s in m.signals(cfg)} == {"dpo_teacher.values.chosen", "dpo_teacher.values.rejected"}
    cfg = m.make_config({"recipe": "authors"})
    assert m.signals(cfg) == [SignalSpec("dpo_teacher", "chosen", "topk"), SignalSpec("dpo_teacher", "rejected", "topk")]
    assert m.make_config({}).tau == 2.0  # the pipeline computes the values cache at this setting


def test_invalid_settings_raise_bench_error():
    for bad in ({"tau": 0.0}, {"tau": -1}, {"gamma": 1.5}, {"gamma": -0.1}, {"alpha": -1}, {"beta": -0.1},
                {"value_type": "q"}, {"recipe": "code"}, {"recipe": "authors", "alpha": 0.5},
                {"recipe": "authors", "value_type": "max"}, {"recipe": "authors", "reference": "none"},
                {"value_type": "logit", "gamma": 0.9}, {"reference": "policy"}, {"alpha": "nan"}, {"discount": 0.9}):
        with pytest.raises(BenchError):
            build_config(TVKDConfig, bad, "tvkd")


def test_registered_entry_point():
    assert isinstance(get_method("tvkd"), TVKD)

"""ADPA / ADPA+ plugins: advantage fill rules and clamp by hand, every variant against independent float64 loops
(dense k == V and sparse k < V), gradcheck, the sign of the update, declarations and settings."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bench.errors import BenchError
from bench.method import LossBatch, SignalSpec, build_config
from bench.registry import get_method
from bench.tensors import Packed
from methods.adpa import ADPA, ADPAConfig, advantages, expected_advantage, fill_reference
from methods.adpa_plus import ADPAPlus

L = math.log


pytestmark = pytest.mark.usefixtures("one_thread")



# ---------------------------------------------------------------- helpers (independent of the plugin)


from loss_fixtures import topk_signal  # noqa: E402
from loss_fixtures import packed as _packed  # noqa: E402


def packed(lengths, V, gen, scale=1.5) -> Packed:
    return _packed(lengths, V, gen, scale)


def logsoftmax(z):
    m = max(z)
    s = m + math.log(sum(math.exp(x - m) for x in z))
    return [x - s for x in z]


def ref_advantage_row(dpo_ids, dpo_lps, ref_ids, ref_lps, fill="ref_min", clamp=False):
    """One row's {token: A(token)} with dicts and loops."""
    ref = dict(zip(ref_ids, ref_lps))
    floor = min(ref_lps) if fill == "ref_min" else min(dpo_lps)
    adv = {}
    for a, lp in zip(dpo_ids, dpo_lps):
        v = lp - ref.get(a, floor)
        adv[a] = min(max(v, 1e-8), 1 - 1e-8) if clamp else v
    return adv


def rows(sig):
    return zip(sig["topk_ids"].tolist(), sig["topk_logps"].double().tolist())


def ref_loss(chosen, states, dpo, refsig, gamma=1.6, variant="adpa", fill="ref_min", clamp=False):
    """Independent ADPA loss: NLL(chosen) − γ·mean_t Σ π A, or the variants (γ-weighted too, eq. 30–31), with
    explicit loops."""
    nll = np.mean([-logsoftmax(z)[y] for z, y in zip(chosen.logits.tolist(), chosen.labels.tolist())])
    terms = []
    ref_rows = rows(refsig) if refsig is not None else [(None, None)] * len(states.labels)
    for z, (d_ids, d_lps), (r_ids, r_lps) in zip(states.logits.tolist(), rows(dpo), ref_rows):
        lq = logsoftmax(z)
        if variant == "no_ref":
            adv = dict(zip(d_ids, d_lps))
        else:
            adv = ref_advantage_row(d_ids, d_lps, r_ids, r_lps, fill, clamp)
        if variant in ("adpa", "no_ref"):
            terms.append(sum(math.exp(lq[a]) * A for a, A in adv.items()))
        elif variant == "q_argmax":
            best = max(adv.values())
            a_star = next(a for a in d_ids if adv[a] == best)  # first in the DPO top-k order
            terms.append(-lq[a_star])
        else:  # q_softmax: KL(softmax(A) over the top-k || full-softmax student)
            m = max(adv.values())
            zsum = sum(math.exp(v - m) for v in adv.values())
            terms.append(sum(math.exp(v - m) / zsum * (v - m - math.log(zsum) - lq[a]) for a, v in adv.items()))
    t = float(np.mean(terms))
    return nll - gamma * t if variant in ("adpa", "no_ref") else nll + gamma * t


def make_batch(V=10, k=4, k_ref=5, seed=0, state_side="gen:sft_student", lengths_w=(3, 2), lengths_s=(4, 3)):
    g = torch.Generator().manual_seed(seed)
    ch = packed(lengths_w, V, g)
    policy = {"chosen": ch}
    st = ch if state_side == "chosen" else packed(lengths_s, V, g)
    policy[state_side] = st
    n = st.logits.shape[0]
    base = torch.randn(n, V, generator=g) * 2
    dpo = topk_signal(base + torch.randn(n, V, generator=g), k)  # correlated teachers: partial top-k overlap
    ref = topk_signal(base + torch.randn(n, V, generator=g), k_ref)
    signals = {SignalSpec("dpo_teacher", state_side, "topk").name: dpo,
               SignalSpec("ref_teacher", state_side, "topk").name: ref}
    return LossBatch(policy=policy, signals=signals), ch, st, dpo, ref


# ---------------------------------------------------------------- advantages by hand


def test_fill_rules_and_clamp_hand_worked():
    # DPO top-3: ids (3, 1, 4) with probs (.5, .2, .05); reference top-3: ids (1, 5, 3) with probs (.4, .3, .2).
    d_ids, d_lp = torch.tensor([[3, 1, 4]]), torch.tensor([[L(.5), L(.2), L(.05)]], dtype=torch.float64)
    r_ids, r_lp = torch.tensor([[1, 5, 3]]), torch.tensor([[L(.4), L(.3), L(.2)]], dtype=torch.float64)
    # paper: token 4 is missing from the reference's top-k → log of π_ref's smallest top-k prob (.2); token 5 dropped
    paper = advantages(d_ids, d_lp, r_ids, r_lp, fill="ref_min")
    torch.testing.assert_close(paper, torch.tensor([[L(.5 / .2), L(.2 / .4), L(.05 / .2)]], dtype=torch.float64))
    # authors' code: the fill is π_dpo's smallest top-k prob (.05) → A(4) = 0
    code = advantages(d_ids, d_lp, r_ids, r_lp, fill="dpo_min")
    torch.testing.assert_close(code, torch.tensor([[L(.5 / .2), L(.2 / .4), 0.0]], dtype=torch.float64))
    torch.testing.assert_close(fill_reference(d_ids, d_lp, r_ids, r_lp, "dpo_min"),
                               torch.tensor([[L(.2), L(.4), L(.05)]], dtype=torch.float64))
    # clamp to [1e-8, 1 − 1e-8]: log 2.5 ≈ 0.916 kept, the negative ones (and the 0) become 1e-8
    clamped = advantages(d_ids, d_lp, r_ids, r_lp, fill="ref_min", clamp=True)
    torch.testing.assert_close(clamped, torch.tensor([[L(2.5), 1e-8, 1e-8]], dtype=torch.float64))
    # a large positive advantage is capped just below 1: π_dpo = .9 against π_ref = .1 (log 9 ≈ 2.2)
    big = advantages(torch.tensor([[7, 8]]), torch.tensor([[L(.9), L(.05)]], dtype=torch.float64),
                     torch.tensor([[7, 8]]), torch.tensor([[L(.1), L(.05)]], dtype=torch.float64), clamp=True)
    torch.testing.assert_close(big, torch.tensor([[1 - 1e-8, 1e-8]], dtype=torch.float64))
    # no reference ("w/o reference teacher"): the DPO log-probs themselves
    torch.testing.assert_close(advantages(d_ids, d_lp), d_lp)


def test_advantage_rows_match_loops_with_float16_cache():
    batch, ch, st, dpo, ref = make_batch(seed=1)
    for fill in ("ref_min", "dpo_min"):
        for clamp in (False, True):
            got = advantages(dpo["topk_ids"], dpo["topk_logps"].double(), ref["topk_ids"], ref["topk_logps"], fill,
                             clamp)
            for row, (d_ids, d_lps), (r_ids, r_lps) in zip(got.tolist(), rows(dpo), rows(ref)):
                want = ref_advantage_row(d_ids, d_lps, r_ids, r_lps, fill, clamp)
                assert row == pytest.approx([want[a] for a in d_ids], rel=1e-12, abs=1e-15)
    # the random teachers overlap only partly, so both fill branches are exercised
    match = (dpo["topk_ids"][:, :, None] == ref["topk_ids"][:, None, :]).any(-1)
    assert match.any() and (~match).any()


# ---------------------------------------------------------------- plugin loss against the loops


@pytest.mark.parametrize("variant,fill,clamp", [
    (v, f, c) for v in ("adpa", "no_ref", "q_argmax", "q_softmax")
    for f, c in (("ref_min", False), ("dpo_min", False), ("ref_min", True), ("dpo_min", True))
    if v != "no_ref" or (f, c) == ("ref_min", False)])  # fill/clamp do not apply without the reference teacher
def test_plugin_matches_loops_k_lt_v(variant, fill, clamp):
    m = ADPA()
    cfg = m.make_config({"variant": variant, "fill": fill, "clamp": clamp})
    batch, ch, st, dpo, ref = make_batch(seed=2)
    loss, _ = m.loss(batch, cfg)
    want = ref_loss(ch, st, dpo, None if variant == "no_ref" else ref, variant=variant, fill=fill, clamp=clamp)
    assert loss.item() == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize("variant", ["adpa", "no_ref", "q_argmax", "q_softmax"])
def test_plugin_dense_k_eq_v(variant):
    # both teachers' top-k cover the vocabulary: A = log π_dpo − log π_ref on every token, no fill needed;
    # the expected-advantage term and the Q targets are then computed densely from the full distributions
    V = 6
    g = torch.Generator().manual_seed(3)
    ch, st = packed((2, 2), V, g), packed((3, 2), V, g)
    zd, zr = torch.randn(5, V, generator=g, dtype=torch.float64), torch.randn(5, V, generator=g, dtype=torch.float64)
    dpo, ref = topk_signal(zd, V), topk_signal(zr, V)
    batch = LossBatch(policy={"chosen": ch, "gen:sft_student": st},
                      signals={"dpo_teacher.topk.gen:sft_student": dpo, "ref_teacher.topk.gen:sft_student": ref})
    loss, _ = ADPA().loss(batch, ADPA().make_config({"variant": variant}))
    # dense arrays indexed by token id, from the same float16 cached values
    pd = np.zeros((5, V)), np.zeros((5, V))
    for r in range(5):
        pd[0][r, dpo["topk_ids"][r].numpy()] = dpo["topk_logps"][r].double().numpy()
        pd[1][r, ref["topk_ids"][r].numpy()] = ref["topk_logps"][r].double().numpy()
    adv = pd[0] if variant == "no_ref" else pd[0] - pd[1]
    lq = np.array([logsoftmax(z) for z in st.logits.tolist()])
    nll = np.mean([-logsoftmax(z)[y] for z, y in zip(ch.logits.tolist(), ch.labels.tolist())])
    if variant in ("adpa", "no_ref"):
        want = nll - 1.6 * np.mean((np.exp(lq) * adv).sum(-1))
    elif variant == "q_argmax":
        order = [dpo["topk_ids"][r].tolist() for r in range(5)]
        want = nll + 1.6 * np.mean([-lq[r, max(order[r], key=lambda a: (adv[r, a], -order[r].index(a)))] for r in range(5)])
    else:
        pa = np.exp(adv - adv.max(-1, keepdims=True))
        pa /= pa.sum(-1, keepdims=True)
        want = nll + 1.6 * np.mean((pa * (np.log(pa) - lq)).sum(-1))  # γ-weighted, eq. 30–31
    assert loss.item() == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize("variant", ["adpa", "no_ref", "q_argmax", "q_softmax"])
def test_gradcheck_float64_on_plugin_loss(variant):
    m = ADPA()
    cfg = m.make_config({"variant": variant})
    batch, ch, st, dpo, ref = make_batch(V=7, k=3, k_ref=3, seed=4, lengths_w=(2,), lengths_s=(2, 1))

    def f(lw, ls):
        b = LossBatch(policy={"chosen": Packed(lw, ch.labels, ch.seg, ch.n_seq),
                              "gen:sft_student": Packed(ls, st.labels, st.seg, st.n_seq)}, signals=batch.signals)
        return m.loss(b, cfg)[0]
    assert torch.autograd.gradcheck(f, (ch.logits, st.logits))


@pytest.mark.parametrize("variant", ["adpa", "no_ref", "q_argmax", "q_softmax"])
def test_bfloat16_logits_run_and_backprop(variant):
    m = ADPA()
    cfg = m.make_config({"variant": variant})
    batch, *_ = make_batch(seed=11)
    pol = {k: Packed(p.logits.detach().bfloat16().requires_grad_(True), p.labels, p.seg, p.n_seq)
           for k, p in batch.policy.items()}
    loss, _ = m.loss(LossBatch(policy=pol, signals=batch.signals), cfg)
    loss.backward()
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert torch.isfinite(pol["gen:sft_student"].logits.grad.float()).all()
    assert loss.item() == pytest.approx(m.loss(batch, cfg)[0].item(), rel=0.05, abs=0.05)


def test_sgd_step_raises_probability_of_positive_advantage_tokens():
    # one positive-advantage token per state, the others negative: an SGD step on the rollout logits (the SFT term
    # does not touch them) raises π_θ of the positive token; in logit space the step raises exactly the logits of
    # the tokens whose advantage exceeds Σ_a π_θ(a)A(a) (tokens outside the top-k count with A = 0)
    m = ADPA()
    cfg = m.make_config({})
    batch, ch, st, dpo, ref = make_batch(seed=5)
    n = st.logits.shape[0]
    ids = torch.stack([torch.randperm(10, generator=torch.Generator().manual_seed(i))[:4] for i in range(n)])
    d_lp = torch.log(torch.tensor([[.5, .2, .1, .05]] * n, dtype=torch.float64))
    r_lp = torch.log(torch.tensor([[.1, .3, .3, .2]] * n, dtype=torch.float64))  # A = (+1.6, −0.4, −1.1, −1.4)
    batch.signals["dpo_teacher.topk.gen:sft_student"] = {"topk_ids": ids, "topk_logps": d_lp,
                                                         "tail": torch.full((n,), 0.15)}
    batch.signals["ref_teacher.topk.gen:sft_student"] = {"topk_ids": ids, "topk_logps": r_lp,
                                                         "tail": torch.full((n,), 0.1)}
    loss, _ = m.loss(batch, cfg)
    (grad,) = torch.autograd.grad(loss, st.logits)
    before = torch.softmax(st.logits.detach(), -1)
    after = torch.softmax(st.logits.detach() - 0.1 * grad, -1)
    adv = d_lp - r_lp
    gain = (after - before).gather(-1, ids)
    assert (gain[:, 0] > 0).all()  # the positive-advantage token
    baseline = expected_advantage(st.logits.detach(), ids, adv)[:, None]
    step = -grad.gather(-1, ids)
    assert ((step > 0) == (adv > baseline)).all() and (adv > baseline).any() and (adv < baseline).any()
    # and the expected advantage went up
    assert (expected_advantage(st.logits.detach() - 0.1 * grad, ids, adv) > baseline.squeeze(-1)).all()


def test_clamp_silences_negative_advantages():
    # with clamp=True a state whose every advantage is negative gives (almost) no gradient toward the tail
    ids = torch.tensor([[0, 1]])
    d_lp = torch.log(torch.tensor([[.2, .1]], dtype=torch.float64))
    r_lp = torch.log(torch.tensor([[.4, .3]], dtype=torch.float64))
    logits = torch.zeros(1, 4, dtype=torch.float64, requires_grad=True)
    for clamp, small in ((False, False), (True, True)):
        adv = advantages(ids, d_lp, ids, r_lp, clamp=clamp)
        (g,) = torch.autograd.grad(-expected_advantage(logits, ids, adv).sum(), logits)
        assert (g.abs().max().item() < 1e-7) == small


# ---------------------------------------------------------------- state sources, ADPA+, declarations


def test_state_source_chosen_uses_one_pass_for_both_terms():
    m = ADPA()
    cfg = m.make_config({"state_source": "chosen"})
    assert m.sides(cfg) == ("chosen",)
    assert [s.name for s in m.signals(cfg)] == ["dpo_teacher.topk.chosen", "ref_teacher.topk.chosen"]
    batch, ch, st, dpo, ref = make_batch(seed=6, state_side="chosen")
    assert st is ch
    loss, _ = m.loss(batch, cfg)
    assert loss.item() == pytest.approx(ref_loss(ch, ch, dpo, ref), rel=1e-12)


@pytest.mark.parametrize("source,side", [("student", "gen:sft_student"), ("rejected", "rejected"),
                                         ("teacher", "gen:dpo_teacher")])
def test_state_sources_declare_their_side(source, side):
    m = ADPA()
    cfg = m.make_config({"state_source": source})
    assert m.sides(cfg) == ("chosen", side)
    assert m.signals(cfg) == [SignalSpec("dpo_teacher", side, "topk"), SignalSpec("ref_teacher", side, "topk")]
    batch, ch, st, dpo, ref = make_batch(seed=7, state_side=side)
    assert m.loss(batch, cfg)[0].item() == pytest.approx(ref_loss(ch, st, dpo, ref), rel=1e-12)


def test_no_ref_declares_no_reference_teacher():
    m = ADPA()
    cfg = m.make_config({"variant": "no_ref"})
    assert m.signals(cfg) == [SignalSpec("dpo_teacher", "gen:sft_student", "topk")]
    assert m.required_models(cfg) == {"reference", "dpo_teacher", "sft_student"}
    batch, ch, st, dpo, _ = make_batch(seed=8)
    del batch.signals["ref_teacher.topk.gen:sft_student"]
    assert m.loss(batch, cfg)[0].item() == pytest.approx(ref_loss(ch, st, dpo, None, variant="no_ref"), rel=1e-12)


def test_adpa_plus_uses_the_dckd_student():
    m = ADPAPlus()
    cfg = m.make_config({})
    assert (m.name, m.display_name) == ("adpa_plus", "ADPA+")
    assert m.init_from(cfg) == "run:dckd"
    assert m.sides(cfg) == ("chosen", "gen:run:dckd")
    assert m.signals(cfg) == [SignalSpec("dpo_teacher", "gen:run:dckd", "topk"),
                              SignalSpec("ref_teacher", "gen:run:dckd", "topk")]
    assert m.required_models(cfg) == {"run:dckd", "dpo_teacher", "ref_teacher"}
    batch, ch, st, dpo, ref = make_batch(seed=9, state_side="gen:run:dckd")
    assert m.loss(batch, cfg)[0].item() == pytest.approx(ref_loss(ch, st, dpo, ref), rel=1e-12)
    assert m.sides(m.make_config({"state_source": "teacher"})) == ("chosen", "gen:dpo_teacher")


@pytest.mark.parametrize("variant", ["adpa", "no_ref", "q_argmax", "q_softmax"])
def test_gamma_weights_every_variant(variant):
    # eq. 10 and, for the Q ablations, eq. 30–31 (γ/|ŷ| Σ_t): γ scales the teacher term of every variant
    m = ADPA()
    batch, ch, st, dpo, ref = make_batch(seed=10)
    refsig = None if variant == "no_ref" else ref
    losses = {}
    for gamma in (0.5, 3.0):
        losses[gamma], parts = m.loss(batch, m.make_config({"gamma": gamma, "variant": variant}))
        assert losses[gamma].item() == pytest.approx(ref_loss(ch, st, dpo, refsig, gamma=gamma, variant=variant),
                                                     rel=1e-12)
    term = {"adpa": "expected_adv", "no_ref": "expected_adv", "q_argmax": "q_ce", "q_softmax": "q_kl"}[variant]
    sign = -1 if variant in ("adpa", "no_ref") else 1
    assert (losses[3.0] - losses[0.5]).item() == pytest.approx(sign * 2.5 * parts[term], rel=1e-9)


def test_invalid_settings_raise_bench_error():
    for bad in ({"gamma": -1}, {"variant": "dpo"}, {"state_source": "ref"}, {"fill": "zero"}, {"clamp": "sometimes"},
                {"variant": "no_ref", "clamp": True}, {"variant": "no_ref", "fill": "dpo_min"},
                {"variant": "q_argmax", "q_weight": 2.0}, {"alpha": 1}, {"gamma": "nan"}):
        with pytest.raises(BenchError):
            build_config(ADPAConfig, bad, "adpa")


def test_registered_entry_points():
    assert isinstance(get_method("adpa"), ADPA)
    plus = get_method("adpa_plus")
    assert isinstance(plus, ADPAPlus) and plus.display_name == "ADPA+"

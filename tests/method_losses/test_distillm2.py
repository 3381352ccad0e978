"""DistiLLM-2 plugin: SKL on teacher responses + SRKL on student responses against a float64 loop computation
written from the definitions (KL(p ‖ αp + (1−α)q), KL(q ‖ (1−α)p + αq)), exactness at k = V−1 against the dense
full-vocabulary divergences, both reductions, the authors' detached SRKL mixture, gradcheck, declarations."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bench.errors import BenchError
from bench.method import LossBatch, build_config
from bench.registry import get_method
from bench.tensors import Packed
from methods.distillm2 import DistiLLM2, DistiLLM2Config
from loss_fixtures import packed, topk_signal

pytestmark = pytest.mark.usefixtures("one_thread")

T_SIDE, S_SIDE = "gen:dpo_teacher", "gen:sft_student"


def make(V=9, k=4, seed=0, lengths_t=(3, 5), lengths_s=(4, 2)):
    g = torch.Generator().manual_seed(seed)
    t, s = packed(lengths_t, V, g), packed(lengths_s, V, g)
    sig_t = topk_signal(torch.randn(sum(lengths_t), V, generator=g, dtype=torch.float64) * 2, k)
    sig_s = topk_signal(torch.randn(sum(lengths_s), V, generator=g, dtype=torch.float64) * 2, k)
    batch = LossBatch(policy={T_SIDE: t, S_SIDE: s},
                      signals={f"dpo_teacher.topk.{T_SIDE}": sig_t, f"dpo_teacher.topk.{S_SIDE}": sig_s})
    return batch, t, s, sig_t, sig_s


# ---------------------------------------------------------------- independent float64 loops


def bins_by_hand(z, ids, logps, tail):
    """(student bin probs, teacher bin probs) of one row: the top-k ids, then the rest of the vocabulary."""
    m = max(z)
    e = [math.exp(v - m) for v in z]
    total = sum(e)
    q = [e[i] / total for i in ids]
    rest = [j for j in range(len(z)) if j not in set(ids)]
    p = [math.exp(v) for v in logps]
    if rest:
        q.append(sum(e[j] for j in rest) / total)
        p.append(max(tail, 0.0))
    return q, p


def skew_by_hand(q, p, alpha, reverse):
    if reverse:  # KL(q ‖ (1−α)p + αq)
        return sum(qb * math.log(qb / ((1 - alpha) * pb + alpha * qb)) for qb, pb in zip(q, p) if qb > 0)
    return sum(pb * math.log(pb / (alpha * pb + (1 - alpha) * qb)) for qb, pb in zip(q, p) if pb > 0)


def side_by_hand(side: Packed, sig, alpha, reverse, reduction):
    logits = side.logits.detach().tolist()
    ids, lps, tails = sig["topk_ids"].tolist(), sig["topk_logps"].double().tolist(), sig["tail"].double().tolist()
    per_tok = [skew_by_hand(*bins_by_hand(z, i, lp, r), alpha, reverse) for z, i, lp, r in zip(logits, ids, lps, tails)]
    if reduction == "token":
        return float(np.mean(per_tok))
    seg = side.seg.tolist()
    return float(np.mean([np.mean([d for d, b in zip(per_tok, seg) if b == s]) for s in range(side.n_seq)]))


def loss_by_hand(t, s, sig_t, sig_s, alpha=0.1, reduction="sequence"):
    return side_by_hand(t, sig_t, alpha, False, reduction) + side_by_hand(s, sig_s, alpha, True, reduction)


# ---------------------------------------------------------------- tests


@pytest.mark.parametrize("alpha", [0.1, 0.0, 0.5])
@pytest.mark.parametrize("reduction", ["sequence", "token"])
@pytest.mark.parametrize("srkl_mix", ["full", "detached"])
def test_loss_matches_float64_loops(alpha, reduction, srkl_mix):
    m = DistiLLM2()
    batch, t, s, sig_t, sig_s = make(seed=1)
    cfg = m.make_config({"alpha": alpha, "reduction": reduction, "srkl_mix": srkl_mix})
    loss, parts = m.loss(batch, cfg)
    assert loss.item() == pytest.approx(loss_by_hand(t, s, sig_t, sig_s, alpha, reduction), rel=1e-12)
    assert parts["skl_teacher"] == pytest.approx(side_by_hand(t, sig_t, alpha, False, reduction), rel=1e-12)


def test_the_two_reductions_differ_on_unequal_lengths():
    m = DistiLLM2()
    batch, *_ = make(seed=2)
    a = m.loss(batch, m.make_config({}))[0].item()
    b = m.loss(batch, m.make_config({"reduction": "token"}))[0].item()
    assert abs(a - b) > 1e-6


@pytest.mark.parametrize("k_minus", [1, 0])
def test_exact_full_vocabulary_divergences_at_k_ge_v_minus_1(k_minus):
    # the teacher's cached bins then describe its full distribution: p at the top-k ids, the tail on the one
    # remaining id (k = V−1) or nothing (k = V); compare with dense full-vocabulary skew KLs
    V, alpha = 7, 0.1
    batch, t, s, sig_t, sig_s = make(V=V, k=V - k_minus, seed=3)

    def dense_teacher(sig, n):
        p = torch.zeros(n, V, dtype=torch.float64)
        p.scatter_(1, sig["topk_ids"].long(), sig["topk_logps"].double().exp())
        if k_minus:
            p[p == 0] = sig["tail"].double()
        return p

    def dense(side, sig, reverse):
        p, q = dense_teacher(sig, side.labels.numel()), torch.softmax(side.logits.detach(), -1)
        if reverse:
            tok = (q * (q.log() - ((1 - alpha) * p + alpha * q).log())).sum(-1)
        else:
            tok = torch.where(p > 0, p * (p.log() - (alpha * p + (1 - alpha) * q).log()), torch.zeros_like(p)).sum(-1)
        return torch.zeros(side.n_seq, dtype=torch.float64).index_add(0, side.seg, tok).div(
            torch.bincount(side.seg).double()).mean()
    want = dense(t, sig_t, False) + dense(s, sig_s, True)
    loss, _ = DistiLLM2().loss(batch, DistiLLM2().make_config({}))
    assert loss.item() == pytest.approx(want.item(), rel=1e-12)


@pytest.mark.parametrize("overrides", [{}, {"reduction": "token"}, {"alpha": 0.3}])
def test_gradcheck_float64(overrides):
    m = DistiLLM2()
    cfg = m.make_config(overrides)
    batch, t, s, *_ = make(V=6, k=3, seed=4, lengths_t=(2, 3), lengths_s=(3, 1))

    def f(lt, ls):
        b = LossBatch(policy={T_SIDE: Packed(lt, t.labels, t.seg, t.n_seq), S_SIDE: Packed(ls, s.labels, s.seg, s.n_seq)},
                      signals=batch.signals)
        return m.loss(b, cfg)[0]
    assert torch.autograd.gradcheck(f, (t.logits, s.logits))


def test_detached_srkl_mixture_is_the_authors_gradient():
    # same value; gradient of KL(q ‖ (1−α)p + α·sg(q)) — written densely over the k+1 bins with an explicit detach
    m = DistiLLM2()
    batch, t, s, sig_t, sig_s = make(seed=5)
    grads = {}
    for mix in ("full", "detached"):
        s.logits.grad = None
        loss, _ = m.loss(batch, m.make_config({"srkl_mix": mix}))
        (g,) = torch.autograd.grad(loss, s.logits)
        grads[mix] = (loss.item(), g)
    assert grads["full"][0] == grads["detached"][0]
    assert (grads["full"][1] - grads["detached"][1]).abs().max() > 1e-4

    logits = s.logits.detach().clone().requires_grad_(True)
    ids = sig_s["topk_ids"].long()
    logq_all = torch.log_softmax(logits, -1)
    q_k = logq_all.gather(-1, ids).exp()
    q = torch.cat([q_k, (1 - q_k.sum(-1, keepdim=True))], -1)
    p = torch.cat([sig_s["topk_logps"].double().exp(), sig_s["tail"].double()[:, None]], -1)
    tok = (q * (q.log() - (0.9 * p + 0.1 * q.detach()).log())).sum(-1)
    srkl = torch.zeros(s.n_seq, dtype=torch.float64).index_add(0, s.seg, tok).div(torch.bincount(s.seg).double()).mean()
    (want,) = torch.autograd.grad(srkl, logits)
    torch.testing.assert_close(grads["detached"][1], want, rtol=1e-9, atol=1e-12)


def test_declarations():
    m = DistiLLM2()
    cfg = m.make_config({})
    assert m.sides(cfg) == (T_SIDE, S_SIDE)
    assert [x.name for x in m.signals(cfg)] == [f"dpo_teacher.topk.{T_SIDE}", f"dpo_teacher.topk.{S_SIDE}"]
    assert m.required_models(cfg) == {"reference", "dpo_teacher", "sft_student"}
    cfg = m.make_config({"teacher": "ref_teacher"})
    assert m.sides(cfg) == ("gen:ref_teacher", S_SIDE)
    assert isinstance(get_method("distillm2"), DistiLLM2)


def test_invalid_settings_raise_bench_error():
    for bad in ({"alpha": -0.1}, {"alpha": 1.0}, {"alpha": "nan"}, {"srkl_mix": "half"}, {"reduction": "sum"},
                {"teacher": "chosen_teacher"}, {"beta": 1.0}):
        with pytest.raises(BenchError):
            build_config(DistiLLM2Config, bad, "distillm2")

"""Token-level distillation baselines (VanillaKD, SeqKD, ATKD, GKD): independent float64 dense full-vocabulary
computations (teacher top-k with k = V−1 makes the k+1-bin losses exact), hand-worked values, declaration checks and
gradcheck w.r.t. the policy logits; and the settings checks of all seven distillation baselines. No model: LossBatch
built by hand. The pair-based baselines (PLaD, DDPO, DPKD): tests/method_losses/test_distill_pairs.py."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from bench.errors import BenchError
from bench.method import LossBatch, SignalSpec
from bench.tensors import Packed
from distill_kit import D, dense_kl, logps_signal, packed, teacher_logits, tok_logp, topk_signal, with_logits
from methods.atkd import ATKD, atkd_kd_loss, atkd_split, atkd_token_parts
from methods.ddpo import DDPO
from methods.dpkd import DPKD
from methods.gkd import GKD, gkd_mix, gkd_token_loss
from methods.plad import PLaD
from methods.seq_kd import SeqKD
from methods.vanilla_kd import VanillaKD

pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------- VanillaKD
def kd_batch(V=7, k=None, seed=0, lengths=(3, 1, 2), teacher="dpo_teacher", dtype=D):
    p = packed(lengths, V, seed)
    tl = teacher_logits(p.labels.numel(), V, seed + 100)
    sig = {SignalSpec(teacher, "chosen", "topk").name: topk_signal(tl, k or V - 1, dtype)}
    return LossBatch(policy={"chosen": p}, signals=sig), tl


def test_vanilla_kd_dense_equivalence_k_eq_V_minus_1():
    batch, tl = kd_batch()
    p = batch.policy["chosen"]
    cfg = VanillaKD().make_config({"alpha": 0.3})
    loss, m = VanillaKD().loss(batch, cfg)
    want = -tok_logp(p).mean() + 0.3 * dense_kl(tl, p.logits).mean()
    assert loss.item() == pytest.approx(want.item(), abs=1e-10)
    assert m["kl"] == pytest.approx(dense_kl(tl, p.logits).mean().item(), abs=1e-10)


def test_vanilla_kd_small_k_matches_hand_binning():
    V, k = 8, 3
    batch, tl = kd_batch(V=V, k=k, seed=3)
    p = batch.policy["chosen"]
    _, m = VanillaKD().loss(batch, VanillaKD().make_config())
    # bins by hand: teacher top-3 tokens + "everything else", student masses summed over the same sets
    pt, qs = F.softmax(tl, -1), F.softmax(p.logits.detach(), -1)
    total = 0.0
    for i in range(pt.shape[0]):
        top = torch.argsort(pt[i], descending=True)[:k].tolist()
        rest = [v for v in range(V) if v not in top]
        P = [pt[i, v].item() for v in top] + [sum(pt[i, v].item() for v in rest)]
        Q = [qs[i, v].item() for v in top] + [sum(qs[i, v].item() for v in rest)]
        total += sum(a * math.log(a / b) for a, b in zip(P, Q))
    assert m["kl"] == pytest.approx(total / pt.shape[0], abs=1e-10)


def test_vanilla_kd_declarations_and_fp16_cache():
    cfg = VanillaKD().make_config({"teacher": "ref_teacher"})
    assert VanillaKD().signals(cfg) == [SignalSpec("ref_teacher", "chosen", "topk")]
    assert VanillaKD().make_config().alpha == 0.2
    batch, _ = kd_batch(teacher="ref_teacher", dtype=torch.float16, k=4)
    batch.policy["chosen"] = Packed(batch.policy["chosen"].logits.float().detach().requires_grad_(),
                                    batch.policy["chosen"].labels, batch.policy["chosen"].seg, 3)
    batch.signals["ref_teacher.topk.chosen"]["tail"] = batch.signals["ref_teacher.topk.chosen"]["tail"].float()
    loss, _ = VanillaKD().loss(batch, cfg)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)


def test_vanilla_kd_gradcheck():
    batch, _ = kd_batch(V=5, k=2, lengths=(2, 1), seed=4)
    cfg = VanillaKD().make_config({"alpha": 0.7})
    assert torch.autograd.gradcheck(lambda z: VanillaKD().loss(with_logits(batch, "chosen", z), cfg)[0],
                                    (batch.policy["chosen"].logits,))


# ---------------------------------------------------------------- SeqKD
def test_seq_kd_is_sft_on_teacher_generations():
    m = SeqKD()
    cfg = m.make_config()
    assert m.sides(cfg) == ("gen:dpo_teacher",) and m.signals(cfg) == []
    assert m.required_models(cfg) >= {"dpo_teacher"}
    p = packed([2, 3], 6, 9)
    loss, _ = m.loss(LossBatch(policy={"gen:dpo_teacher": p}), cfg)
    assert loss.item() == pytest.approx(-tok_logp(p).mean().item(), abs=1e-12)
    assert m.sides(m.make_config({"teacher": "ref_teacher"})) == ("gen:ref_teacher",)
    with pytest.raises(BenchError):
        m.make_config({"teacher": "sft_student"})


# ---------------------------------------------------------------- ATKD
def atkd_batch(V=6, k=None, seed=10, lengths=(4, 3, 3), force_tail_gold=True, lam_teacher="dpo_teacher"):
    g = torch.Generator().manual_seed(seed)
    N = sum(lengths)
    tl = teacher_logits(N, V, seed + 1)
    labels = torch.randint(0, V, (N,), generator=g)
    if force_tail_gold:  # make some gold tokens the teacher's least likely one (outside the top V−1)
        labels[::3] = tl.argmin(-1)[::3]
    p = packed(lengths, V, seed + 2, labels=labels)
    sig = {SignalSpec(lam_teacher, "chosen", "topk").name: topk_signal(tl, k or V - 1),
           SignalSpec(lam_teacher, "chosen", "logps").name: logps_signal(tl, labels)}
    return LossBatch(policy={"chosen": p}, signals=sig), tl


def dense_atkd_parts(tl, sl, labels):
    """Authors'-code style dense TCKD/NCKD (full vocabulary, `cat_mask` + masked softmax), row by row."""
    pt, ps = F.softmax(tl, -1), F.softmax(sl, -1)
    tck, nck = [], []
    for i in range(tl.shape[0]):
        g = int(labels[i])
        bt = torch.stack([pt[i, g], 1 - pt[i, g]])
        bs = torch.stack([ps[i, g], 1 - ps[i, g]])
        tck.append((bt * (bt.log() - bs.log())).sum())
        keep = [v for v in range(tl.shape[1]) if v != g]
        ht, hs = F.softmax(tl[i, keep], -1), F.log_softmax(sl[i, keep], -1)
        nck.append((ht * (ht.log() - hs)).sum())
    return torch.stack(tck), torch.stack(nck)


def test_atkd_parts_match_dense_and_dkd_identity():
    batch, tl = atkd_batch()
    p = batch.policy["chosen"]
    t = batch.signals["dpo_teacher.topk.chosen"]
    gold = batch.signals["dpo_teacher.logps.chosen"]["logps"]
    in_top = (t["topk_ids"].long() == p.labels[:, None]).any(-1)
    assert in_top.any() and (~in_top).any()  # both cases exercised
    tckd, nckd, u = atkd_token_parts(p.logits, p.labels, t["topk_ids"], t["topk_logps"], t["tail"], gold)
    tck_d, nck_d = dense_atkd_parts(tl, p.logits.detach(), p.labels)
    assert torch.allclose(tckd, tck_d, atol=1e-10) and torch.allclose(nckd, nck_d, atol=1e-10)
    # DKD identity: KL = TCKD + (1 − p_T(g))·NCKD
    assert torch.allclose(tckd + u * nckd, dense_kl(tl, p.logits.detach()), atol=1e-10)
    assert torch.allclose(u, 1 - F.softmax(tl, -1).gather(-1, p.labels[:, None]).squeeze(-1), atol=1e-12)


def test_atkd_k_equals_V_exact_and_finite():
    batch, tl = atkd_batch(V=5, k=5, seed=3)
    p = batch.policy["chosen"]
    t = batch.signals["dpo_teacher.topk.chosen"]
    gold = batch.signals["dpo_teacher.logps.chosen"]["logps"]
    tckd, nckd, _ = atkd_token_parts(p.logits, p.labels, t["topk_ids"], t["topk_logps"], t["tail"], gold)
    tck_d, nck_d = dense_atkd_parts(tl, p.logits.detach(), p.labels)
    assert torch.allclose(tckd, tck_d, atol=1e-10) and torch.allclose(nckd, nck_d, atol=1e-10)
    loss, _ = ATKD().loss(batch, ATKD().make_config())
    assert torch.isfinite(torch.autograd.grad(loss, p.logits)[0]).all()


def test_atkd_loss_matches_authors_recipe():
    batch, tl = atkd_batch(seed=12)
    p = batch.policy["chosen"]
    cfg = ATKD().make_config()
    assert (cfg.lam, cfg.sft_weight) == (0.2, 1.0)
    loss, m = ATKD().loss(batch, cfg)
    tck, nck = dense_atkd_parts(tl, p.logits.detach(), p.labels)
    u = 1 - F.softmax(tl, -1).gather(-1, p.labels[:, None]).squeeze(-1)
    med = torch.sort(u).values[(u.numel() - 1) // 2]  # lower median, as torch.median
    easy = u < med
    want = 0.2 * nck[easy].mean() + 0.8 * (tck + nck)[~easy].mean() - tok_logp(p).detach().mean()
    assert loss.item() == pytest.approx(want.item(), abs=1e-9)
    assert m["easy_frac"] == pytest.approx(easy.double().mean().item())
    loss0, _ = ATKD().loss(batch, ATKD().make_config({"sft_weight": 0}))
    assert loss0.item() == pytest.approx((want + tok_logp(p).detach().mean()).item(), abs=1e-9)


def test_atkd_split_and_empty_subsets():
    u = torch.tensor([0.1, 0.5, 0.3, 0.9], dtype=D)
    assert atkd_split(u).tolist() == [True, False, False, False]  # lower median 0.3, strict <
    same = torch.full((4,), 0.4, dtype=D)
    easy = atkd_split(same)
    assert not easy.any()
    tck, nck = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=D), torch.tensor([0.5, 0.5, 1.0, 1.0], dtype=D)
    assert atkd_kd_loss(tck, nck, easy, 0.2).item() == pytest.approx(0.8 * (10 + 3) / 4)
    assert atkd_kd_loss(tck, nck, ~easy, 0.2).item() == pytest.approx(0.2 * 3 / 4)


def test_atkd_small_k_finite_and_declarations():
    batch, _ = atkd_batch(V=9, k=3, seed=14, lam_teacher="ref_teacher")
    cfg = ATKD().make_config({"teacher": "ref_teacher"})
    assert ATKD().signals(cfg) == [SignalSpec("ref_teacher", "chosen", "topk"),
                                   SignalSpec("ref_teacher", "chosen", "logps")]
    loss, _ = ATKD().loss(batch, cfg)
    assert torch.isfinite(loss)
    g = torch.autograd.grad(loss, batch.policy["chosen"].logits)[0]
    assert torch.isfinite(g).all()


@pytest.mark.parametrize("V,k", [(5, 4), (7, 2)])
def test_atkd_gradcheck(V, k):
    batch, _ = atkd_batch(V=V, k=k, seed=15, lengths=(2, 2))
    cfg = ATKD().make_config({"lam": 0.3})
    assert torch.autograd.gradcheck(lambda z: ATKD().loss(with_logits(batch, "chosen", z), cfg)[0],
                                    (batch.policy["chosen"].logits,))


# ---------------------------------------------------------------- GKD
def dense_gjsd(t_logits, s_logits, beta):
    """Generalised JSD by the textbook definition (GKD eq. 1), with TRL's endpoint convention."""
    lp, lq = F.log_softmax(t_logits, -1), F.log_softmax(s_logits, -1)
    p, q = lp.exp(), lq.exp()
    if beta == 0:
        return (p * (lp - lq)).sum(-1)
    if beta == 1:
        return (q * (lq - lp)).sum(-1)
    m = beta * p + (1 - beta) * q
    return beta * (p * (lp - m.log())).sum(-1) + (1 - beta) * (q * (lq - m.log())).sum(-1)


@pytest.mark.parametrize("beta", [0.0, 0.1, 0.5, 0.9, 1.0])
def test_gkd_token_loss_dense(beta):
    V = 7
    p = packed((3, 2), V, 60)
    tl = teacher_logits(5, V, 61)
    t = topk_signal(tl, V - 1)
    got = gkd_token_loss(p.logits, t["topk_ids"], t["topk_logps"], t["tail"], beta)
    assert torch.allclose(got, dense_gjsd(tl, p.logits.detach(), beta), atol=1e-9)


@pytest.mark.parametrize("beta", [0.1, 0.5])
def test_gkd_k_equals_V_is_finite_and_exact(beta):
    # k = V: the tail bin is empty on both sides (interior b only; the endpoints go through bench.tensors.sparse_kl)
    V = 5
    p = packed((2, 2), V, 62)
    tl = teacher_logits(4, V, 63)
    t = topk_signal(tl, V)
    got = gkd_token_loss(p.logits, t["topk_ids"], t["topk_logps"], t["tail"], beta)
    assert torch.allclose(got, dense_gjsd(tl, p.logits.detach(), beta), atol=1e-9)
    g = torch.autograd.grad(got.sum(), p.logits)[0]
    g_dense = torch.autograd.grad(dense_gjsd(tl, p.logits, beta).sum(), p.logits)[0]
    assert torch.allclose(g, g_dense, atol=1e-9)


def test_gkd_hand_value_symmetric_jsd():
    # teacher (1, 0) vs student (0, 1) on two tokens, β = 0.5: JSD = log 2. k = 1 bin + tail.
    big = 40.0
    s = torch.tensor([[-big, big]], dtype=D, requires_grad=True)
    t = {"topk_ids": torch.tensor([[0]]), "topk_logps": torch.tensor([[0.0]], dtype=D),
         "tail": torch.tensor([0.0], dtype=D)}
    got = gkd_token_loss(s, t["topk_ids"], t["topk_logps"], t["tail"], 0.5)
    assert got.item() == pytest.approx(math.log(2), abs=1e-12)


def gkd_batch(V=6, seed=70, lengths=(2, 3, 1, 2), k=None):
    pd, pg = packed(lengths, V, seed), packed(tuple(reversed(lengths)), V, seed + 1)
    tld, tlg = teacher_logits(pd.labels.numel(), V, seed + 2), teacher_logits(pg.labels.numel(), V, seed + 3)
    sig = {"dpo_teacher.topk.chosen": topk_signal(tld, k or V - 1),
           "dpo_teacher.topk.gen:sft_student": topk_signal(tlg, k or V - 1)}
    return LossBatch(policy={"chosen": pd, "gen:sft_student": pg}, signals=sig), tld, tlg


def test_gkd_mix_weighted_and_split():
    batch, tld, tlg = gkd_batch()
    pd, pg = batch.policy["chosen"], batch.policy["gen:sft_student"]
    jd, jg = dense_gjsd(tld, pd.logits.detach(), 0.5), dense_gjsd(tlg, pg.logits.detach(), 0.5)
    loss, m = GKD().loss(batch, GKD().make_config())
    assert loss.item() == pytest.approx((0.5 * jd.mean() + 0.5 * jg.mean()).item(), abs=1e-9)
    assert m["jsd_data"] == pytest.approx(jd.mean().item(), abs=1e-9)
    loss, _ = GKD().loss(batch, GKD().make_config({"lmbda": 0.3}))
    assert loss.item() == pytest.approx((0.7 * jd.mean() + 0.3 * jg.mean()).item(), abs=1e-9)
    # split, B = 4, λ = 0.5 → sequences 2, 3 from the rollouts, 0, 1 from the dataset; one token mean
    loss, _ = GKD().loss(batch, GKD().make_config({"mix": "split"}))
    sel = torch.cat([jd[pd.seg < 2], jg[pg.seg >= 2]])
    assert loss.item() == pytest.approx(sel.mean().item(), abs=1e-9)
    # split with λ = 0.3 → round(1.2) = 1 rollout sequence (index 3)
    loss, _ = GKD().loss(batch, GKD().make_config({"mix": "split", "lmbda": 0.3}))
    sel = torch.cat([jd[pd.seg < 3], jg[pg.seg >= 3]])
    assert loss.item() == pytest.approx(sel.mean().item(), abs=1e-9)
    x = torch.tensor([1.0, 2.0, 3.0], dtype=D)
    assert gkd_mix(x, torch.tensor([0, 0, 1]), None, None, 2, 0.5, "weighted").item() == pytest.approx(2.0)


def test_gkd_sides_and_signals():
    m = GKD()
    cfg = m.make_config()
    assert (cfg.beta, cfg.lmbda, cfg.mix) == (0.5, 0.5, "weighted")
    assert m.sides(cfg) == ("chosen", "gen:sft_student")
    assert [s.name for s in m.signals(cfg)] == ["dpo_teacher.topk.chosen", "dpo_teacher.topk.gen:sft_student"]
    assert m.sides(m.make_config({"lmbda": 0})) == ("chosen",)
    c1 = m.make_config({"lmbda": 1, "teacher": "ref_teacher"})
    assert m.sides(c1) == ("gen:sft_student",)
    assert [s.name for s in m.signals(c1)] == ["ref_teacher.topk.gen:sft_student"]
    assert m.required_models(cfg) >= {"sft_student", "dpo_teacher"}


@pytest.mark.parametrize("beta,mix,side", [(0.5, "weighted", "chosen"), (0.3, "split", "gen:sft_student"),
                                           (0.0, "weighted", "gen:sft_student"), (1.0, "weighted", "chosen")])
def test_gkd_gradcheck(beta, mix, side):
    batch, _, _ = gkd_batch(V=5, lengths=(2, 1), k=2, seed=80)
    cfg = GKD().make_config({"beta": beta, "mix": mix})
    assert torch.autograd.gradcheck(lambda z: GKD().loss(with_logits(batch, side, z), cfg)[0],
                                    (batch.policy[side].logits,))


# ---------------------------------------------------------------- settings validation
@pytest.mark.parametrize("method,overrides", [
    (VanillaKD, {"alpha": -1}), (VanillaKD, {"teacher": "sft_student"}), (ATKD, {"lam": 1.5}),
    (ATKD, {"lam": -0.1}), (ATKD, {"sft_weight": -1}), (PLaD, {"delta": -1}), (PLaD, {"pairs": "fake"}),
    (DDPO, {"beta": -0.05}), (DDPO, {"beta_t": -1}), (DPKD, {"alpha": -0.1}), (DPKD, {"pairs": "x"}),
    (GKD, {"beta": 1.2}), (GKD, {"lmbda": -0.2}), (GKD, {"mix": "random"}), (GKD, {"lmbda": "half"}),
    (SeqKD, {"unknown": 1}),
])
def test_invalid_settings_raise(method, overrides):
    with pytest.raises(BenchError):
        method().make_config(overrides)


@pytest.mark.parametrize("method", [VanillaKD, SeqKD, ATKD, PLaD, DDPO, DPKD, GKD])
def test_every_setting_has_a_source(method):
    import dataclasses
    for f in dataclasses.fields(method.config_cls):
        assert f.metadata.get("source"), f"{method.__name__}.{f.name} lacks a source"
    assert method.__doc__ and method.citation

"""DCKD plugin: loss against independent float64 loops, gradcheck, perfect-match zero KL, settings/declarations."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bench.errors import BenchError
from bench.method import LossBatch, SignalSpec, build_config
from bench.registry import get_method
from bench.tensors import Packed, sparse_kl
from methods.dckd import DCKD, DCKDConfig, dckd_loss


pytestmark = pytest.mark.usefixtures("one_thread")



# ---------------------------------------------------------------- fixtures built by hand


from loss_fixtures import packed, topk_signal  # noqa: E402,F401


def np_logsoftmax(z):
    m = max(z)
    return [x - m - math.log(sum(math.exp(y - m) for y in z)) for x in z]


def ref_sparse_kl_rows(logits, sig):
    """Independent forward k+1-bin KL per row (loops, float64)."""
    out = []
    for z, ids, lps, r in zip(logits.tolist(), sig["topk_ids"].tolist(), sig["topk_logps"].double().tolist(),
                              sig["tail"].double().tolist()):
        lq = np_logsoftmax(z)
        kl = sum(math.exp(lp) * (lp - lq[i]) for i, lp in zip(ids, lps))
        rest = [lq[j] for j in range(len(z)) if j not in ids]
        if r > 0:
            kl += r * (math.log(r) - math.log(sum(math.exp(x) for x in rest)))
        out.append(kl)
    return out


def ref_nll(p: Packed):
    return float(np.mean([-np_logsoftmax(z)[y] for z, y in zip(p.logits.tolist(), p.labels.tolist())]))


def ref_dckd(chosen, rejected, sig_w, sig_l, w_w, w_l):
    loss = ref_nll(chosen) + w_w * float(np.mean(ref_sparse_kl_rows(chosen.logits, sig_w)))
    if rejected is not None:
        loss += w_l * float(np.mean(ref_sparse_kl_rows(rejected.logits, sig_l)))
    return loss


def make_batch(V=9, k=4, teacher="dpo_teacher", seed=0, lengths_w=(3, 5), lengths_l=(4, 2)):
    g = torch.Generator().manual_seed(seed)
    ch, rj = packed(lengths_w, V, g), packed(lengths_l, V, g)
    sig_w = topk_signal(torch.randn(ch.logits.shape[0], V, generator=g) * 2, k)
    sig_l = topk_signal(torch.randn(rj.logits.shape[0], V, generator=g) * 2, k)
    batch = LossBatch(policy={"chosen": ch, "rejected": rj},
                      signals={SignalSpec(teacher, "chosen", "topk").name: sig_w,
                               SignalSpec(teacher, "rejected", "topk").name: sig_l})
    return batch, ch, rj, sig_w, sig_l


# ---------------------------------------------------------------- loss values


@pytest.mark.parametrize("teacher", ["dpo_teacher", "chosen_teacher"])
def test_plugin_matches_independent_loops_k_lt_v(teacher):
    m = DCKD()
    cfg = m.make_config({"teacher": teacher})
    batch, ch, rj, sig_w, sig_l = make_batch(teacher=teacher)
    loss, metrics = m.loss(batch, cfg)
    want = ref_dckd(ch, rj, sig_w, sig_l, 0.2, 0.2)
    assert loss.item() == pytest.approx(want, rel=1e-12)
    assert metrics["nll"] == pytest.approx(ref_nll(ch), rel=1e-12)
    assert metrics["kl_chosen"] > 0 and metrics["kl_rejected"] > 0


def test_plugin_k_eq_v_minus_1_dense_by_hand():
    # k = V−1: the tail bin is exactly one token, so the k+1-bin KL is the full-vocabulary KL (dense, by hand)
    V = 6
    batch, ch, rj, sig_w, sig_l = make_batch(V=V, k=V - 1, seed=3)
    loss, _ = DCKD().loss(batch, DCKDConfig())
    # dense teacher distribution from the cached bins: top-k probs plus the one left-over token holding the tail
    def dense_kl(p: Packed, sig):
        total = 0.0
        for z, ids, lps, r in zip(p.logits.tolist(), sig["topk_ids"].tolist(), sig["topk_logps"].double().tolist(),
                                  sig["tail"].double().tolist()):
            pt = [0.0] * V
            for i, lp in zip(ids, lps):
                pt[i] = math.exp(lp)
            (left,) = set(range(V)) - set(ids)
            pt[left] = r
            lq = np_logsoftmax(z)
            total += sum(pv * (math.log(pv) - lq[i]) for i, pv in enumerate(pt) if pv > 0)
        return total / len(p.labels)
    want = ref_nll(ch) + 0.2 * dense_kl(ch, sig_w) + 0.2 * dense_kl(rj, sig_l)
    assert loss.item() == pytest.approx(want, rel=1e-10)


def test_plugin_k_eq_v_dense_full_vocabulary():
    # k == V, tail = 0: the loss is SFT + α·(dense KL_w + dense KL_l), written with explicit numpy loops
    V = 7
    g = torch.Generator().manual_seed(4)
    ch, rj = packed((2, 3), V, g), packed((4,), V, g)
    tw, tl = torch.randn(5, V, generator=g, dtype=torch.float64), torch.randn(4, V, generator=g, dtype=torch.float64)
    sig_w, sig_l = topk_signal(tw, V), topk_signal(tl, V)
    assert float(sig_w["tail"].max()) < 1e-3
    sig_w["tail"].zero_(), sig_l["tail"].zero_()
    batch = LossBatch(policy={"chosen": ch, "rejected": rj},
                      signals={"dpo_teacher.topk.chosen": sig_w, "dpo_teacher.topk.rejected": sig_l})
    loss, _ = DCKD().loss(batch, DCKDConfig())

    def dense(p, sig):
        kls = []
        for z, ids, lps in zip(p.logits.detach().numpy(), sig["topk_ids"].numpy(), sig["topk_logps"].double().numpy()):
            lq = np.array(np_logsoftmax(list(z)))
            kls.append(sum(np.exp(lp) * (lp - lq[i]) for i, lp in zip(ids, lps)))
        return np.mean(kls)
    want = ref_nll(ch) + 0.2 * (dense(ch, sig_w) + dense(rj, sig_l))
    assert loss.item() == pytest.approx(want, rel=1e-10)
    assert torch.isfinite(torch.autograd.grad(loss, ch.logits)[0]).all()


def test_authors_recipe_weights_and_ablations():
    m = DCKD()
    batch, ch, rj, sig_w, sig_l = make_batch(seed=5)
    loss, _ = m.loss(batch, m.make_config({"recipe": "authors"}))
    assert loss.item() == pytest.approx(ref_dckd(ch, rj, sig_w, sig_l, 0.1, 0.1), rel=1e-12)
    loss, _ = m.loss(batch, m.make_config({"alpha": 0.5}))
    assert loss.item() == pytest.approx(ref_dckd(ch, rj, sig_w, sig_l, 0.5, 0.5), rel=1e-12)
    # w/o dispreferred: the rejected side is neither declared nor read
    cfg = m.make_config({"use_rejected": "false"})
    only_chosen = LossBatch(policy={"chosen": ch}, signals={"dpo_teacher.topk.chosen": sig_w})
    loss, metrics = m.loss(only_chosen, cfg)
    assert loss.item() == pytest.approx(ref_dckd(ch, None, sig_w, None, 0.2, 0.2), rel=1e-12)
    assert "kl_rejected" not in metrics


def test_perfect_match_k_lt_v_gives_zero_kl():
    # the teacher's cached top-k and tail equal the student's own distribution: both KLs vanish, loss == SFT
    g = torch.Generator().manual_seed(6)
    ch, rj = packed((3, 2), 10, g), packed((4,), 10, g)
    exact = lambda p, k: {  # noqa: E731  float64 signal taken from the student itself
        "topk_ids": (t := torch.log_softmax(p.logits.detach(), -1).topk(k, -1))[1],
        "topk_logps": t[0], "tail": 1 - t[0].exp().sum(-1)}
    parts = dckd_loss(ch, exact(ch, 4), rj, exact(rj, 4))[1]
    assert abs(parts["kl_chosen"].item()) < 1e-6 and abs(parts["kl_rejected"].item()) < 1e-6
    assert parts["nll"].item() == pytest.approx(ref_nll(ch), rel=1e-12)


def test_perfect_match_k_eq_v_gives_zero_kl():
    g = torch.Generator().manual_seed(7)
    ch = packed((3, 2), 6, g)
    lp, ids = torch.log_softmax(ch.logits.detach(), -1).topk(6, -1)
    loss, parts = dckd_loss(ch, {"topk_ids": ids, "topk_logps": lp, "tail": torch.zeros(5, dtype=torch.float64)})
    assert abs(parts["kl_chosen"].item()) < 1e-12
    assert loss.item() == pytest.approx(parts["nll"].item(), rel=1e-12)


def test_gradcheck_float64_on_plugin_loss():
    m = DCKD()
    cfg = m.make_config({})
    batch, ch, rj, sig_w, sig_l = make_batch(V=7, k=3, seed=8, lengths_w=(2, 1), lengths_l=(2,))

    def f(lw, ll):
        b = LossBatch(policy={"chosen": Packed(lw, ch.labels, ch.seg, ch.n_seq),
                              "rejected": Packed(ll, rj.labels, rj.seg, rj.n_seq)}, signals=batch.signals)
        return m.loss(b, cfg)[0]
    assert torch.autograd.gradcheck(f, (ch.logits, rj.logits))


def test_kl_gradient_pulls_student_toward_teacher():
    # SGD on the KL part alone (one step on the logits) lowers the KL
    batch, ch, _, sig_w, _ = make_batch(seed=9)
    kl = sparse_kl(ch.logits, sig_w["topk_ids"], sig_w["topk_logps"], sig_w["tail"]).mean()
    (grad,) = torch.autograd.grad(kl, ch.logits)
    new = ch.logits.detach() - 0.5 * grad
    assert sparse_kl(new, sig_w["topk_ids"], sig_w["topk_logps"], sig_w["tail"]).mean() < kl


# ---------------------------------------------------------------- declarations and settings


def test_sides_and_signals_follow_settings():
    m = DCKD()
    cfg = m.make_config({})
    assert m.sides(cfg) == ("chosen", "rejected")
    assert [s.name for s in m.signals(cfg)] == ["dpo_teacher.topk.chosen", "dpo_teacher.topk.rejected"]
    cfg = m.make_config({"teacher": "chosen_teacher", "use_rejected": False})
    assert m.sides(cfg) == ("chosen",)
    assert m.signals(cfg) == [SignalSpec("chosen_teacher", "chosen", "topk")]
    assert m.required_models(cfg) == {"reference", "chosen_teacher"}
    assert m.init_from(cfg) == "reference"


def test_invalid_settings_raise_bench_error():
    for bad in ({"alpha": -0.1}, {"teacher": "ref_teacher"}, {"recipe": "code"}, {"recipe": "authors", "alpha": 0.3},
                {"use_rejected": "maybe"}, {"beta": 1.0}, {"alpha": "inf"}):
        with pytest.raises(BenchError):
            build_config(DCKDConfig, bad, "dckd")


def test_registered_entry_point():
    m = get_method("dckd")
    assert isinstance(m, DCKD) and m.display_name == "DCKD"

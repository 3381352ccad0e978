"""Cross-tokenizer losses (ULD, GOLD-style) against independent float64 computations written from their definitions
(loops over rows and spans, plain sorting), TRL's own functions as oracles (ULDLoss in positional mode, GOLD's
generalized JSD), gradient checks; and the projection of teacher rows onto student rows (bench/signals/xtok.py)."""
from __future__ import annotations

import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bench.method import LossBatch, SignalSpec
from bench.signals.xtok import FILLER_LOGP, Tokenized, project_example, span_groups, topk_from_xtok
from bench.tensors import sparse_kl
from distill_kit import D, packed, teacher_logits
from methods.gold import GOLD, generalized_jsd, gold_terms
from methods.uld import ULD, sorted_l1, uld_loss

pytestmark = pytest.mark.usefixtures("one_thread")


def teacher_rows(t_logits: torch.Tensor, k: int):
    logp = F.log_softmax(t_logits, -1)
    vals, ids = logp.topk(k, -1)
    return ids, vals, logp


def xtok_one_to_one(t_logits, labels_t, k, to_student, match_share=1.0):
    """xtok rows for responses tokenized the same way on both sides (every row its own span)."""
    ids, vals, logp = teacher_rows(t_logits, k)
    n = t_logits.shape[0]
    groups = [((i, i + 1), (i, i + 1)) for i in range(n)]
    return project_example(groups, n, ids, vals, logp.gather(-1, labels_t[:, None]).squeeze(-1), to_student,
                           match_share)


# ---------------------------------------------------------------- ULD
def ref_sorted_l1(q: np.ndarray, p: np.ndarray) -> float:
    a, b = np.sort(q)[::-1], np.sort(p)[::-1]
    n = max(len(a), len(b))
    a, b = np.pad(a, (0, n - len(a))), np.pad(b, (0, n - len(b)))
    return float(np.abs(a - b).sum())


@pytest.mark.parametrize("Vs,Vt", [(7, 9), (9, 7), (8, 8)])
def test_sorted_l1_is_the_full_sorted_distance_when_k_covers_both_vocabularies(Vs, Vt):
    s = packed([5], Vs, 0).logits.detach()
    t = teacher_logits(5, Vt, 1)
    k = max(Vs, Vt)
    t_logps = F.pad(F.log_softmax(t, -1).sort(-1, descending=True).values, (0, k - Vt), value=float("-inf"))
    got = sorted_l1(s, t_logps)
    for i in range(5):
        want = ref_sorted_l1(F.softmax(s[i], -1).numpy(), F.softmax(t[i], -1).numpy())
        assert got[i].item() == pytest.approx(want, abs=1e-12)


def test_sorted_l1_with_small_k_takes_the_rest_as_one_bin():
    s, t, k = packed([4], 10, 2).logits.detach(), teacher_logits(4, 12, 3), 3
    got = sorted_l1(s, F.log_softmax(t, -1).topk(k, -1).values)
    for i in range(4):
        q, p = np.sort(F.softmax(s[i], -1).numpy())[::-1], np.sort(F.softmax(t[i], -1).numpy())[::-1]
        want = np.abs(q[:k] - p[:k]).sum() + abs(q[k:].sum() - p[k:].sum())
        assert got[i].item() == pytest.approx(want, abs=1e-12)
        assert got[i].item() <= ref_sorted_l1(q, p) + 1e-12  # a lower bound of the full distance


def test_uld_matches_trl_uld_loss_in_positional_mode():
    from trl.experimental.gold.gold_trainer import ULDLoss

    Vs, Vt, Ls, Lt = 9, 13, 5, 7
    p = packed([Ls], Vs, 4)
    t = teacher_logits(Lt, Vt, 5)
    xt = project_example([], Ls, *teacher_rows(t, Vt)[:2], torch.zeros(Lt, dtype=D), torch.full((Vt,), -1))
    batch = LossBatch(policy={"chosen": p}, signals={SignalSpec("dpo_teacher", "chosen", "xtok").name: xt})
    loss, m = ULD().loss(batch, ULD().make_config({"ce_weight": 0.0}))
    cfg = types.SimpleNamespace(uld_crossentropy_weight=0.0, uld_distillation_weight=1.0, uld_student_temperature=1.0,
                                uld_teacher_temperature=1.0, uld_skip_student_eos=False, uld_skip_teacher_eos=False,
                                use_extended_uld=False, uld_token_merge_strategy="observed")
    # TRL reads the answer rows at the label positions ("observed"): put our rows there, one prompt token first
    s_logits = torch.cat([torch.zeros(1, Vs, dtype=D), p.logits.detach()])[None]
    t_all = torch.cat([torch.zeros(1, Vt, dtype=D), t])[None]
    s_lab = torch.tensor([[-100] + [1] * Ls])
    t_lab = torch.tensor([[-100] + [1] * Lt])
    want = ULDLoss(cfg)(s_logits, t_all, s_lab, t_lab, s_lab.clamp(min=0), t_lab.clamp(min=0))
    assert m["uld"] == pytest.approx(float(want), abs=1e-10)
    assert loss.item() == pytest.approx(float(want), abs=1e-10)


def test_uld_span_pairing_uses_group_starts_and_ce_weight():
    p = packed([3, 2], 8, 6)
    t = teacher_logits(4, 8, 7)
    ids, vals, logp = teacher_rows(t, 8)
    groups = [((0, 2), (0, 1)), ((2, 3), (1, 2))]  # first sequence: 3 student rows, 2 teacher rows
    xt0 = project_example(groups, 3, ids[:2], vals[:2], torch.zeros(2, dtype=D), torch.arange(8))
    xt1 = project_example([((0, 1), (0, 1))], 2, ids[2:], vals[2:], torch.zeros(2, dtype=D), torch.arange(8))
    xt = {k: torch.cat([xt0[k], xt1[k]]) for k in xt0}
    total, ce, dist = uld_loss(p, xt, lam=0.5, ce_weight=2.0, pairing="span")
    rows = [(0, 0), (2, 1), (3, 2)]  # (student row, teacher row) of each span start
    want = np.mean([ref_sorted_l1(F.softmax(p.logits[i].detach(), -1).numpy(), F.softmax(t[j], -1).numpy())
                    for i, j in rows])
    assert dist.item() == pytest.approx(want, abs=1e-12)
    nll = -F.log_softmax(p.logits.detach(), -1).gather(-1, p.labels[:, None]).mean()
    assert total.item() == pytest.approx(2.0 * nll.item() + 0.5 * want, abs=1e-12)


def test_uld_gradcheck():
    t = teacher_logits(4, 6, 9)
    xt = project_example([], 4, *teacher_rows(t, 6)[:2], torch.zeros(4, dtype=D), torch.arange(6))

    def f(z):
        p = packed([4], 6, 8)
        p.logits = z
        return uld_loss(p, xt, 1.0, 1.0, "position")[0]

    z = packed([4], 6, 8).logits.detach().clone().requires_grad_(True)
    assert torch.autograd.gradcheck(f, (z,), eps=1e-6, atol=1e-6)


# ---------------------------------------------------------------- GOLD-style
@pytest.mark.parametrize("beta", [0.0, 0.5, 0.9, 1.0])
def test_gold_with_one_tokenizer_and_full_k_is_trls_generalized_jsd(beta):
    from trl.experimental.gold.gold_trainer import GOLDTrainer

    V = 9
    p = packed([3, 2], V, 10)
    t = teacher_logits(5, V, 11)
    xt = xtok_one_to_one(t, p.labels, V, torch.arange(V))
    batch = LossBatch(policy={"chosen": p}, signals={SignalSpec("dpo_teacher", "chosen", "xtok").name: xt})
    loss, m = GOLD().loss(batch, GOLD().make_config({"beta": beta}))
    want = GOLDTrainer.generalized_jsd_loss(p.logits.detach(), t, beta=beta)
    assert loss.item() == pytest.approx(float(want), abs=1e-9)
    assert m["ul1"] == pytest.approx(0.0, abs=1e-12)


def ref_gold(s_logits, labels, groups, t_logits, t_labels, k, to_student, beta, w_m):
    """Independent loop: merge each span's first-token distribution with its later tokens' probabilities, split the
    teacher's top-k into twins (first occurrence of a student id) and the rest, JSD on twins, sorted L1 on the rest."""
    qs, pt = F.softmax(s_logits, -1).numpy(), F.softmax(t_logits, -1).numpy()
    out = []
    for (s0, s1), (t0, t1) in groups:
        scale_s = np.prod([qs[i, labels[i]] for i in range(s0 + 1, s1)])
        scale_t = np.prod([pt[j, t_labels[j]] for j in range(t0 + 1, t1)])
        top = np.argsort(-pt[t0])[:k]
        seen, twin_p, twin_q, other_p = set(), [], [], []
        for v in top:
            w = int(to_student[v])
            if w >= 0 and w not in seen:
                seen.add(w)
                twin_p.append(pt[t0, v] * scale_t)
                twin_q.append(qs[s0, w] * scale_s)
            else:
                other_p.append(pt[t0, v] * scale_t)
        P, Q = np.array(twin_p), np.array(twin_q)
        if beta == 0:
            jsd = (P * np.log(P / Q)).sum()
        elif beta == 1:
            jsd = (Q * np.log(Q / P)).sum()
        else:
            M = beta * P + (1 - beta) * Q
            jsd = beta * (P * np.log(P / M)).sum() + (1 - beta) * (Q * np.log(Q / M)).sum()
        q_other = np.sort(np.array([qs[s0, w] for w in range(qs.shape[1]) if w not in seen]) * scale_s)[::-1]
        p_other = np.sort(np.array(other_p))[::-1] if other_p else np.zeros(0)
        kk = k
        a, b = np.pad(q_other[:kk], (0, max(0, kk - len(q_other[:kk])))), np.pad(p_other, (0, kk - len(p_other)))
        p_rest = (1 - pt[t0, top].sum()) * scale_t
        ul1 = np.abs(a - b).sum() + abs(q_other[kk:].sum() - p_rest)
        out.append(w_m * jsd + (1 - w_m) * ul1)
    return float(np.mean(out))


@pytest.mark.parametrize("beta,k", [(0.5, 4), (0.0, 6), (1.0, 3)])
def test_gold_merged_spans_and_partial_vocab_map_match_a_loop_over_spans(beta, k):
    Vs, Vt = 8, 10
    p = packed([4], Vs, 12)
    t = teacher_logits(3, Vt, 13)
    t_labels = torch.tensor([2, 5, 7])
    to_student = torch.tensor([0, 1, 2, 3, -1, 5, 5, -1, 7, 6])  # two teacher ids share student id 5; two unmapped
    groups = [((0, 2), (0, 1)), ((2, 4), (1, 3))]
    ids, vals, logp = teacher_rows(t, k)
    xt = project_example(groups, 4, ids, vals, logp.gather(-1, t_labels[:, None]).squeeze(-1), to_student, 0.3)
    dist, jsd, ul1 = gold_terms(p, xt, beta, None)
    want = ref_gold(p.logits.detach(), p.labels.numpy(), groups, t, t_labels.numpy(), k, to_student.numpy(), beta,
                    0.3)
    assert dist.item() == pytest.approx(want, abs=1e-10)


def test_gold_gradcheck_through_merged_spans():
    Vs, Vt, k = 6, 7, 4
    t = teacher_logits(3, Vt, 15)
    to_student = torch.tensor([0, 1, -1, 3, 4, 5, 2])
    ids, vals, logp = teacher_rows(t, k)
    groups = [((0, 2), (0, 1)), ((2, 3), (1, 3))]
    xt = project_example(groups, 3, ids, vals, logp[:, 0], to_student, 0.6)
    base = packed([3], Vs, 14)

    def f(z):
        return gold_terms(type(base)(z, base.labels, base.seg, 1), xt, 0.5, None)[0]

    z = base.logits.detach().clone().requires_grad_(True)
    assert torch.autograd.gradcheck(f, (z,), eps=1e-6, atol=1e-6)


def test_generalized_jsd_endpoints_are_the_two_kls():
    lp = torch.log(torch.tensor([[0.2, 0.5]], dtype=D))
    lq = torch.log(torch.tensor([[0.4, 0.1]], dtype=D))
    fwd = (0.2 * np.log(0.2 / 0.4) + 0.5 * np.log(0.5 / 0.1))
    rev = (0.4 * np.log(0.4 / 0.2) + 0.1 * np.log(0.1 / 0.5))
    assert generalized_jsd(lp, lq, 0.0).item() == pytest.approx(fwd, abs=1e-12)
    assert generalized_jsd(lp, lq, 1.0).item() == pytest.approx(rev, abs=1e-12)


# ---------------------------------------------------------------- projection
def test_span_groups_add_the_eos_group_only_when_both_sides_end_aligned():
    s = Tokenized([5, 6, 7, 0], [(0, 2), (2, 3), (3, 5)], True)
    t = Tokenized([9, 8, 1], [(0, 3), (3, 5)], True)
    assert span_groups(s, t) == [((0, 2), (0, 1)), ((2, 3), (1, 2)), ((3, 4), (2, 3))]
    cut = Tokenized([9, 8], [(0, 3), (3, 5)], False)  # teacher response cut before its EOS
    assert span_groups(s, cut) == [((0, 2), (0, 1)), ((2, 3), (1, 2))]
    assert span_groups(None, t) == []


def test_projection_places_teacher_rows_on_span_starts_and_drops_duplicate_twins():
    t = teacher_logits(3, 5, 20)
    ids, vals, logp = teacher_rows(t, 5)
    t_lp = torch.tensor([-0.5, -1.0, -2.0], dtype=D)
    to_student = torch.tensor([1, 1, -1, 0, 2])
    xt = project_example([((0, 2), (0, 1)), ((2, 3), (1, 3))], 3, ids, vals, t_lp, to_student, 0.8)
    assert xt["first"].tolist() == [True, False, True] and xt["group"].tolist() == [0, 0, 1]
    assert torch.equal(xt["topk_ids"][2], ids[1].int()) and torch.isneginf(xt["topk_logps"][1]).all()
    assert xt["later"].tolist() == pytest.approx([0.0, 0.0, -2.0])
    assert xt["span_logp"].tolist() == pytest.approx([-0.5, 0.0, -3.0])
    for row in (0, 2):
        sids = [int(v) for v in xt["topk_sids"][row] if v >= 0]
        assert len(sids) == len(set(sids))  # teacher ids 0 and 1 both spell student id 1: only the likelier maps
        first_hit = [int(to_student[i]) for i in xt["topk_ids"][row]]
        assert sids == list(dict.fromkeys(s for s in first_hit if s >= 0))
    assert (xt["topk_sids"][1] == -1).all() and xt["match_share"].tolist() == pytest.approx([0.8] * 3)
    assert xt["pos_valid"].tolist() == [True, True, True]


def test_topk_through_the_vocabulary_map_gives_forward_kl_on_span_starts_and_ce_inside_spans():
    Vs, Vt, k = 9, 12, 5
    t = teacher_logits(3, Vt, 30)
    ids, vals, logp = teacher_rows(t, k)
    to_student = torch.tensor([0, 1, 2, 3, -1, 5, 5, -1, 7, 6, 8, -1])
    groups = [((0, 2), (0, 1)), ((2, 3), (1, 3))]
    x = project_example(groups, 3, ids, vals, logp[:, 0], to_student, 0.5)
    p = packed([3], Vs, 31)
    top = topk_from_xtok(x, p.labels)
    assert (top["topk_logps"] <= 0).all() and ((top["topk_logps"] == FILLER_LOGP).sum(-1) > 0).all()
    for ids_row, lp_row in zip(top["topk_ids"], top["topk_logps"]):  # repeats carry no teacher mass
        real = ids_row[lp_row > FILLER_LOGP].tolist()
        assert len(real) == len(set(real)) and set(ids_row.tolist()) == set(real)
    got = sparse_kl(p.logits.detach(), top["topk_ids"], top["topk_logps"].double(), top["tail"].double())
    q = F.softmax(p.logits.detach(), -1)
    for row, t_row in ((0, 0), (2, 1)):  # span starts: bins = the teacher's twins (first occurrence) + the rest
        pt = F.softmax(t[t_row], -1)
        seen, P, Q = set(), [], []
        for v in pt.argsort(descending=True)[:k].tolist():
            w = int(to_student[v])
            if w >= 0 and w not in seen:
                seen.add(w)
                P.append(pt[v].item())
                Q.append(q[row, w].item())
        P.append(1 - sum(P))
        Q.append(1 - sum(Q))
        want = sum(a * np.log(a / b) for a, b in zip(P, Q))
        assert got[row].item() == pytest.approx(want, abs=1e-6)
    assert got[1].item() == pytest.approx(-np.log(q[1, p.labels[1]].item()), abs=1e-9)  # inside a span: CE


def test_forward_kl_through_the_map_has_a_gradient_only_where_the_bins_are_real():
    t = teacher_logits(3, 12, 32)
    ids, vals, logp = teacher_rows(t, 5)
    to_student = torch.tensor([0, 1, 2, 3, -1, 5, 5, -1, 7, 6, 8, -1])
    x = project_example([((0, 2), (0, 1)), ((2, 3), (1, 3))], 3, ids, vals, logp[:, 0], to_student, 0.5)
    base = packed([3], 9, 33)
    top = topk_from_xtok(x, base.labels)

    def f(z):
        return sparse_kl(z, top["topk_ids"], top["topk_logps"].double(), top["tail"].double()).sum()

    z = base.logits.detach().clone().requires_grad_(True)
    assert torch.autograd.gradcheck(f, (z,), eps=1e-6, atol=1e-6)

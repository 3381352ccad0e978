"""bench.tensors.sparse_kl (the k+1-bin KL every distillation loss uses) against hand computations in float64."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bench.tensors import sparse_kl, student_bins


RTOL = 1e-12


pytestmark = pytest.mark.usefixtures("one_thread")



# ---------------------------------------------------------------- independent reference


def np_log_softmax(z: np.ndarray) -> np.ndarray:
    m = z.max()
    return z - (m + math.log(np.exp(z - m).sum()))


def hand_kl(logits, ids, logps, tail, reverse=False, eps=1e-12) -> np.ndarray:
    """Row-by-row k+1-bin KL with explicit loops (float64 numpy, independent of bench.tensors)."""
    logits, ids = np.asarray(logits, np.float64), np.asarray(ids)
    logps, tail = np.asarray(logps, np.float64), np.asarray(tail, np.float64)
    out = []
    for z, idx, lp, r in zip(logits, ids, logps, tail):
        logq_all = np_log_softmax(z)
        logq = [logq_all[i] for i in idx]
        rest = [logq_all[j] for j in range(len(z)) if j not in set(idx.tolist())]
        if rest:
            m = max(rest)
            logq_tail = m + math.log(sum(math.exp(x - m) for x in rest))
        else:
            logq_tail = -math.inf
        r = max(r, 0.0)
        if not reverse:
            kl = sum(math.exp(a) * (a - b) for a, b in zip(lp, logq))
            if r > 0:
                kl += r * (math.log(r) - logq_tail)
        else:
            kl = sum(math.exp(b) * (b - a) for a, b in zip(lp, logq))
            if logq_tail > -math.inf:
                kl += math.exp(logq_tail) * (logq_tail - math.log(max(r, eps)))
        out.append(kl)
    return np.array(out)


def teacher_topk(teacher_logits: torch.Tensor, k: int, half: bool = True):
    """Cached-signal style top-k of a dense teacher: ids, log-probs (float16 like the cache), tail (float32)."""
    logp = torch.log_softmax(teacher_logits.double(), -1)
    vals, ids = logp.topk(k, dim=-1)
    if half:
        vals = vals.half()
    tail = (1 - vals.double().exp().sum(-1)).clamp(min=0).float()
    return ids.int(), vals, tail


# ---------------------------------------------------------------- tests


def test_forward_and_reverse_match_hand_computation_k_lt_v():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 11, generator=g, dtype=torch.float64) * 2
    ids, lp, tail = teacher_topk(torch.randn(6, 11, generator=g) * 2, k=4)
    for reverse in (False, True):
        got = sparse_kl(logits, ids, lp, tail, reverse=reverse)
        assert got.dtype == torch.float64
        want = hand_kl(logits.numpy(), ids.numpy(), lp.double().numpy(), tail.double().numpy(), reverse)
        np.testing.assert_allclose(got.numpy(), want, rtol=RTOL, atol=RTOL)
        assert (got > -1e-6).all()  # a KL up to the float16 rounding of the cached teacher log-probs


def test_float64_teacher_logps_are_not_rounded():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(4, 9, generator=g, dtype=torch.float64)
    ids, lp, tail = teacher_topk(torch.randn(4, 9, generator=g), k=3, half=False)
    for reverse in (False, True):
        got = sparse_kl(logits, ids, lp, tail.double(), reverse=reverse)
        want = hand_kl(logits.numpy(), ids.numpy(), lp.numpy(), tail.double().numpy(), reverse)
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-13, atol=1e-14)


def test_teacher_tail_mass_near_zero():
    # teacher puts all but ~1e-9 of its mass on its top-3 (of 8): the tail term is ~0 and everything stays finite
    t = torch.tensor([[12.0, 11.0, 10.0] + [-10.0] * 5, [5.0, 14.0, 13.0] + [-12.0] * 5])
    ids, lp, tail = teacher_topk(t, k=3, half=False)
    assert (tail < 1e-6).all()
    logits = torch.randn(2, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(2), requires_grad=True)
    for tail_value in (tail, torch.zeros_like(tail)):  # tiny, and exactly zero
        for reverse in (False, True):
            got = sparse_kl(logits, ids, lp.double(), tail_value, reverse=reverse)
            assert torch.isfinite(got).all()
            want = hand_kl(logits.detach().numpy(), ids.numpy(), lp.double().numpy(), tail_value.double().numpy(),
                           reverse)
            np.testing.assert_allclose(got.detach().numpy(), want, rtol=1e-6, atol=1e-7)
            (grad,) = torch.autograd.grad(got.sum(), logits)
            assert torch.isfinite(grad).all()


def test_label_outside_topk_counts_in_the_tail_bin():
    # the gold token (id 7) is not in the teacher's top-3: its student mass is part of the tail bin, so moving
    # student mass between two non-top-k tokens (the label and id 6) leaves the KL unchanged
    g = torch.Generator().manual_seed(3)
    t = torch.randn(1, 8, generator=g)
    t[0, 6:] = -5.0
    ids, lp, tail = teacher_topk(t, k=3)
    assert 7 not in ids[0].tolist()
    logits = torch.randn(1, 8, generator=g, dtype=torch.float64)
    moved = logits.clone()
    total = torch.logsumexp(logits[0, 6:], 0)
    moved[0, 7], moved[0, 6] = total - 0.01, total + math.log1p(-math.exp(-0.01))  # same tail mass, split differently
    kl_a, kl_b = sparse_kl(logits, ids, lp, tail), sparse_kl(moved, ids, lp, tail)
    torch.testing.assert_close(kl_a, kl_b, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(kl_a.numpy(), hand_kl(logits.numpy(), ids.numpy(), lp.double().numpy(),
                                                     tail.double().numpy()), rtol=RTOL)


def test_student_mass_outside_topk_gives_large_finite_value():
    # the student puts ~all its mass outside the teacher's top-k: log q(top-k) ≈ −60, forward KL ≈ Σp·60
    ids = torch.tensor([[0, 1, 2]])
    lp = torch.log(torch.tensor([[0.5, 0.3, 0.15]], dtype=torch.float64))
    tail = torch.tensor([0.05], dtype=torch.float64)
    logits = torch.zeros(1, 6, dtype=torch.float64)
    logits[0, :3] = -60.0
    logits.requires_grad_(True)
    fwd = sparse_kl(logits, ids, lp, tail)
    want = hand_kl(logits.detach().numpy(), ids.numpy(), lp.numpy(), tail.numpy())
    assert torch.isfinite(fwd).all() and fwd.item() > 50
    np.testing.assert_allclose(fwd.detach().numpy(), want, rtol=RTOL)
    # by hand: log q_i = −60 − log(3 + 3e^−60), log q_tail = log 3 − log(3 + 3e^−60)
    lse = math.log(3 + 3 * math.exp(-60))
    by_hand = (sum(p * (math.log(p) - (-60 - lse)) for p in (0.5, 0.3, 0.15))
               + 0.05 * (math.log(0.05) - (math.log(3) - lse)))
    assert fwd.item() == pytest.approx(by_hand, rel=RTOL)
    (grad,) = torch.autograd.grad(fwd.sum(), logits)
    assert torch.isfinite(grad).all() and (grad[0, :3] < 0).all()  # gradient descent raises the top-k logits
    rev = sparse_kl(logits.detach(), ids, lp, tail, reverse=True)
    assert torch.isfinite(rev).all()
    np.testing.assert_allclose(rev.numpy(), hand_kl(logits.detach().numpy(), ids.numpy(), lp.numpy(), tail.numpy(),
                                                    reverse=True), rtol=RTOL)


def test_reverse_kl_with_empty_teacher_tail_uses_eps():
    # the teacher's tail is exactly 0 but the student has tail mass: reverse KL charges it against log(1e-12)
    ids = torch.tensor([[0, 1]])
    lp = torch.log(torch.tensor([[0.6, 0.4]], dtype=torch.float64))
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.2]], dtype=torch.float64))
    got = sparse_kl(logits, ids, lp, torch.zeros(1, dtype=torch.float64), reverse=True).item()
    want = 0.5 * math.log(0.5 / 0.6) + 0.3 * math.log(0.3 / 0.4) + 0.2 * (math.log(0.2) - math.log(1e-12))
    assert got == pytest.approx(want, rel=RTOL)


def test_perfect_match_k_lt_v_is_zero_and_mismatch_positive():
    g = torch.Generator().manual_seed(4)
    logits = torch.randn(5, 10, generator=g, dtype=torch.float64)
    ids, lp, tail = teacher_topk(logits, k=4, half=False)
    for reverse in (False, True):
        kl = sparse_kl(logits, ids, lp, tail.double(), reverse=reverse)
        assert kl.abs().max().item() < 1e-6
        other = sparse_kl(logits + torch.randn(5, 10, generator=g, dtype=torch.float64), ids, lp, tail.double(),
                          reverse=reverse)
        assert (other > 1e-4).all()


def test_k_equals_v_is_the_full_kl():
    # k == V: the tail bins are empty and the sparse KL must equal the dense full-vocabulary KL
    g = torch.Generator().manual_seed(5)
    logits = torch.randn(4, 7, generator=g, dtype=torch.float64, requires_grad=True)
    t = torch.randn(4, 7, generator=g, dtype=torch.float64)
    ids, lp, tail = teacher_topk(t, k=7, half=False)
    p, logq = torch.softmax(t, -1), torch.log_softmax(logits, -1)
    dense_fwd = (p * (torch.log_softmax(t, -1) - logq)).sum(-1)
    dense_rev = (logq.exp() * (logq - torch.log_softmax(t, -1))).sum(-1)
    fwd = sparse_kl(logits, ids, lp.double(), torch.zeros(4, dtype=torch.float64))
    rev = sparse_kl(logits, ids, lp.double(), torch.zeros(4, dtype=torch.float64), reverse=True)
    torch.testing.assert_close(fwd, dense_fwd, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(rev, dense_rev, rtol=1e-10, atol=1e-12)
    (grad,) = torch.autograd.grad(fwd.sum() + rev.sum(), logits)
    assert torch.isfinite(grad).all()
    same = sparse_kl(t, ids, lp.double(), torch.zeros(4, dtype=torch.float64))
    assert same.abs().max().item() < 1e-12  # perfect match, k == V: zero


def test_gradcheck_float64():
    g = torch.Generator().manual_seed(6)
    logits = torch.randn(3, 8, generator=g, dtype=torch.float64, requires_grad=True)
    ids, lp, tail = teacher_topk(torch.randn(3, 8, generator=g), k=3)
    for reverse in (False, True):
        assert torch.autograd.gradcheck(lambda x: sparse_kl(x, ids, lp, tail, reverse=reverse), (logits,))


def test_student_bins_are_a_distribution():
    g = torch.Generator().manual_seed(7)
    logits = torch.randn(4, 9, generator=g, dtype=torch.float64)
    ids = torch.stack([torch.randperm(9, generator=g)[:4] for _ in range(4)])
    logq, logq_tail = student_bins(logits, ids)
    torch.testing.assert_close(logq.exp().sum(-1) + logq_tail.exp(), torch.ones(4, dtype=torch.float64))
    torch.testing.assert_close(logq, torch.log_softmax(logits, -1).gather(-1, ids))

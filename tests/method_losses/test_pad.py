"""PAD (methods/pad.py): Plackett-Luce ranking distributions and their divergence against float64 loops written from
the paper's equations (rankings enumerated one by one, each stage a softmax over the items left), the authors' code
form of the divergence, the loss on a hand-built batch of K sides, a gradient check, and the settings errors."""
from __future__ import annotations

import itertools
import math

import pytest
import torch

from bench.errors import BenchError
from bench.method import LossBatch, SignalSpec, parse_sample_side
from distill_kit import D, packed
from methods.pad import PAD, pad_loss, plackett_luce_logprobs, ranking_divergence

pytestmark = pytest.mark.usefixtures("one_thread")


def ref_pl(scores: list[float]) -> list[float]:
    out = []
    for perm in itertools.permutations(range(len(scores))):
        p, left = 1.0, list(perm)
        for item in perm:
            p *= math.exp(scores[item]) / sum(math.exp(scores[j]) for j in left)
            left.remove(item)
        out.append(p)
    return out


def ref_div(ps: list[float], pt: list[float], form: str) -> float:
    m = [(a + b) / 2 for a, b in zip(ps, pt)]
    if form == "jsd":
        return 0.5 * sum(a * math.log(a / c) for a, c in zip(ps, m)) + 0.5 * sum(b * math.log(b / c) for b, c in zip(pt, m))
    return 0.5 * sum(c * math.log(c / a) for a, c in zip(ps, m)) + 0.5 * sum(c * math.log(c / b) for b, c in zip(pt, m))


@pytest.mark.parametrize("K", [2, 3, 4])
def test_plackett_luce_matches_the_product_over_stages(K):
    g = torch.Generator().manual_seed(K)
    s = torch.randn(3, K, generator=g, dtype=D) * 2
    got = plackett_luce_logprobs(s).exp()
    for b in range(3):
        want = ref_pl(s[b].tolist())
        assert got[b].tolist() == pytest.approx(want, abs=1e-12)
        assert float(got[b].sum()) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("form", ["jsd", "authors_code"])
def test_pad_loss_is_the_mean_divergence_of_the_two_ranking_distributions(form):
    g = torch.Generator().manual_seed(1)
    r_s, r_t, beta = -torch.rand(2, 4, generator=g, dtype=D), -torch.rand(2, 4, generator=g, dtype=D), 10.0
    got = pad_loss(r_s, r_t, beta, form)
    want = sum(ref_div(ref_pl((beta * r_s[b]).tolist()), ref_pl((beta * r_t[b]).tolist()), form) for b in range(2)) / 2
    assert got.item() == pytest.approx(want, abs=1e-12)
    assert ranking_divergence(plackett_luce_logprobs(r_s), plackett_luce_logprobs(r_s), form).abs().max() < 1e-12


def pad_batch(K=3, lengths=(3, 2), V=7, seed=0):
    cfg = PAD().make_config({"samples": K, "beta": 2.0})
    policy, signals = {}, {}
    for j, side in enumerate(PAD().sides(cfg)):
        policy[side] = packed(lengths, V, seed + j)
        g = torch.Generator().manual_seed(100 + j)
        signals[SignalSpec("dpo_teacher", side, "logps").name] = {
            "logps": -torch.rand(sum(lengths), generator=g, dtype=D) * 3}
    return LossBatch(policy=policy, signals=signals), cfg


def test_pad_loss_on_k_sides_uses_length_normalised_log_likelihoods():
    batch, cfg = pad_batch()
    loss, metrics = PAD().loss(batch, cfg)
    sides = PAD().sides(cfg)
    want = 0.0
    for b, (a, e) in enumerate([(0, 3), (3, 5)]):
        r_s, r_t = [], []
        for side in sides:
            p = batch.policy[side]
            lp = torch.log_softmax(p.logits.detach(), -1).gather(-1, p.labels[:, None]).squeeze(-1)
            r_s.append(float(lp[a:e].mean()))
            r_t.append(float(batch.signal("dpo_teacher", "logps", side)["logps"][a:e].mean()))
        want += ref_div(ref_pl([2.0 * v for v in r_s]), ref_pl([2.0 * v for v in r_t]), "jsd") / 2
    assert loss.item() == pytest.approx(want, abs=1e-12)
    assert 0.0 <= metrics["top1_agree"] <= 1.0


def test_pad_gradcheck():
    batch, cfg = pad_batch(K=2, lengths=(2, 1), V=5)
    sides = PAD().sides(cfg)
    zs = [batch.policy[s].logits.detach().clone().requires_grad_(True) for s in sides]

    def f(*z):
        for s, zi in zip(sides, z):
            batch.policy[s].logits = zi
            batch.policy[s]._memo.clear()
        return PAD().loss(batch, cfg)[0]

    assert torch.autograd.gradcheck(f, tuple(zs), eps=1e-6, atol=1e-6)


def test_pad_declares_k_sample_sides_of_the_sft_student_and_the_teachers_log_probs():
    cfg = PAD().make_config({"samples": 3, "temperature": 0.7})
    sides = PAD().sides(cfg)
    assert [parse_sample_side(s) for s in sides] == [("sft_student", 3, 0.7, j) for j in range(3)]
    assert {s.side for s in PAD().signals(cfg)} == set(sides)
    assert PAD().required_models(cfg) == {"reference", "sft_student", "dpo_teacher"}


@pytest.mark.parametrize("overrides,needle", [({"samples": 1}, "samples=1"), ({"temperature": 0.0}, "temperature=0"),
                                              ({"temperature": -1.0}, "temperature=-1"), ({"samples": 8}, "<= 7")])
def test_bad_pad_settings_are_one_line_errors(overrides, needle):
    with pytest.raises(BenchError, match=needle) as e:
        PAD().make_config(overrides)
    assert "\n" not in str(e.value)

"""Seed methods across tokenizers: TVKD's potentials held between shared boundaries (the held rows by hand, the loss
against an independent float64 computation of boundary shaping, the telescoping to the last shared boundary,
gradcheck, the settings that cannot cross) and ADPA's advantages through the vocabulary map (span starts against a
loop over twins, zero inside spans, every variant finite with filler slots, gradcheck)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bench.errors import BenchError
from bench.method import LossBatch, SignalSpec
from bench.signals.xtok import (
    STATE_VALUE_FIELDS, Tokenized, held_values, project_example, span_groups, topk_from_xtok, values_from_xtok,
)
from bench.tensors import Packed
from methods.adpa import ADPA
from methods.tvkd import TVKD

pytestmark = pytest.mark.usefixtures("one_thread")
D = torch.float64


def dense_values(z: torch.Tensor, tau: float) -> dict[str, torch.Tensor]:
    """The `values` kind of one teacher sequence from its dense logits at every state [T+1, V]."""
    top2 = z.topk(2, -1).values
    return {"v_soft": tau * torch.logsumexp(z / tau, -1), "v_lse": torch.logsumexp(z, -1), "v_max": z.max(-1).values,
            "v_expect": (torch.softmax(z, -1) * z).sum(-1), "v_margin": top2[:, 0] - top2[:, 1]}


def test_held_values_by_hand():
    # student rows 0-1 = teacher token 0 (one span), row 2 = teacher tokens 1-2, row 3 after the last shared boundary
    groups = [((0, 2), (0, 1)), ((2, 3), (1, 3))]
    tv = {v: torch.arange(4, dtype=D) * 10 + i for i, v in enumerate(STATE_VALUE_FIELDS)}
    out = held_values(groups, 4, tv, D)
    assert out["after_v_soft"].tolist() == [0.0, 10.0, 30.0, 30.0]  # inner row holds the span's start (state 0)
    assert out["first_v_soft"].tolist() == [0.0] * 4
    assert out["after_v_lse"].tolist() == [1.0, 11.0, 31.0, 31.0]
    assert held_values([], 2, tv, D)["after_v_max"].tolist() == [2.0, 2.0]  # no shared boundary: the prompt's end


def test_an_empty_response_is_one_eos_group():
    # a rollout that stopped at once: EOS alone under both tokenizers
    assert span_groups(Tokenized([2], [], True), Tokenized([1], [], True)) == [((0, 1), (0, 1))]
    assert span_groups(Tokenized([5], [(0, 1)], False), Tokenized([1], [], True)) == []


def test_values_view_lays_out_t_plus_one_states_per_example():
    tv = {v: torch.tensor([1.0, 2.0, 3.0], dtype=D) for v in STATE_VALUE_FIELDS}
    a = held_values([((0, 1), (0, 1)), ((1, 2), (1, 2))], 2, tv, D)
    b = held_values([((0, 3), (0, 2))], 3, tv, D)
    x = {key: torch.cat([a[key], b[key]]) for key in a}
    got = values_from_xtok(x, [2, 3])
    assert got["v_soft"].tolist() == [1.0, 2.0, 3.0, 1.0, 1.0, 1.0, 3.0]
    assert torch.isnan(got["z_label"]).all() and got["v_soft"].dtype == torch.float32


# ---------------------------------------------------------------- TVKD across tokenizers


class XSide:
    """Student sequences with their own lengths, teacher sequences of other lengths, and the groups between them."""

    def __init__(self, spec, V, Vt, gen, tau):
        self.lengths = [n for n, _, _ in spec]
        n = sum(self.lengths)
        seg = torch.repeat_interleave(torch.arange(len(spec)), torch.tensor(self.lengths))
        self.packed = Packed(logits=(torch.randn(n, V, generator=gen, dtype=D) * 1.5).requires_grad_(True),
                             labels=torch.randint(0, V, (n,), generator=gen), seg=seg, n_seq=len(spec))
        self.ref = torch.log_softmax(torch.randn(n, V, generator=gen, dtype=D), -1).gather(
            -1, self.packed.labels[:, None]).squeeze(-1)
        self.z = [torch.randn(nt + 1, Vt, generator=gen, dtype=D) * 2 for _, nt, _ in spec]
        self.groups = [g for _, _, g in spec]
        rows = []
        for (ns, nt, g), z in zip(spec, self.z):
            ids = torch.zeros(nt, 2, dtype=torch.int32)
            rows.append(project_example(g, ns, ids, torch.zeros(nt, 2, dtype=D), torch.zeros(nt, dtype=D),
                                        torch.full((Vt,), -1), 0.0, dense_values(z, tau)))
        self.xtok = {key: torch.cat([r[key] for r in rows]) for key in rows[0]}

    def values(self):
        v = values_from_xtok(self.xtok, self.lengths)
        v["vseg"] = torch.repeat_interleave(torch.arange(len(self.lengths)), torch.tensor(self.lengths) + 1)
        v["vpos"] = torch.cat([torch.arange(n + 1) for n in self.lengths])
        return v


def phi(z_row: torch.Tensor, value_type: str, tau: float) -> float:
    """A state potential from one state's dense teacher logits, by hand (numpy, float64)."""
    z = z_row.numpy()
    lse = float(np.log(np.exp(z - z.max()).sum()) + z.max())
    p = np.exp(z - lse)
    top = np.sort(z)[::-1]
    return {"soft": tau * float(np.log(np.exp(z / tau - (z / tau).max()).sum()) + (z / tau).max()),
            "max": float(p.max()), "expectation": float((p * z).sum()),
            "margin": float(np.sort(p)[-1] - np.sort(p)[-2]), "max_logprob": float(top[0] - lse),
            "logit_margin": float(top[0] - top[1])}[value_type]


def boundary_rewards(side: XSide, value_type, alpha, beta, tau) -> list[float]:
    """Σ_t β(log π_θ − log π_sref) − α·Σ_g ψ_g with ψ_g = Φ(b_{g+1}) − Φ(b_g) over the shared boundaries b_0 (the
    prompt's end, dropped as TVKD drops Φ(s_1)), b_1.. (the ends of the groups), by a loop."""
    logp = torch.log_softmax(side.packed.logits.detach(), -1).gather(-1, side.packed.labels[:, None]).squeeze(-1)
    out, start = [], 0
    for n, z, groups in zip(side.lengths, side.z, side.groups):
        lr = float((logp[start:start + n] - side.ref[start:start + n]).sum())
        states = [0] + [t1 for _, (_, t1) in groups]
        shaping = sum((phi(z[b1], value_type, tau) - (phi(z[b0], value_type, tau) if i else 0.0))
                      for i, (b0, b1) in enumerate(zip(states[:-1], states[1:])))
        out.append(beta * lr - alpha * shaping)
        start += n
    return out


SPEC_W = [(4, 3, [((0, 2), (0, 1)), ((2, 3), (1, 2)), ((3, 4), (2, 3))]),  # a 2-row span, then one-to-one, EOS
          (3, 5, [((0, 1), (0, 3)), ((1, 2), (3, 4))])]                      # cut: row 2 after the last boundary
SPEC_L = [(2, 2, [((0, 1), (0, 1)), ((1, 2), (1, 2))]), (5, 2, [((0, 5), (0, 2))])]


def xbatch(seed=0, tau=2.0):
    g = torch.Generator().manual_seed(seed)
    w, l = XSide(SPEC_W, 7, 11, g, tau), XSide(SPEC_L, 7, 11, g, tau)
    sig = {}
    for side, s in (("chosen", w), ("rejected", l)):
        sig[SignalSpec("reference", side, "logps").name] = {"logps": s.ref}
        sig[SignalSpec("dpo_teacher", side, "values").name] = s.values()
    return w, l, LossBatch(policy={"chosen": w.packed, "rejected": l.packed}, signals=sig)


@pytest.mark.parametrize("value_type", ["soft", "max", "expectation", "margin", "max_logprob", "logit_margin"])
def test_tvkd_across_tokenizers_is_shaping_over_the_shared_boundaries(value_type):
    w, l, batch = xbatch()
    m = TVKD()
    cfg = m.make_config({"value_type": value_type, "alpha": 0.7, "beta": 0.3})
    loss, _ = m.loss(batch, cfg)
    rw, rl = boundary_rewards(w, value_type, 0.7, 0.3, 2.0), boundary_rewards(l, value_type, 0.7, 0.3, 2.0)
    want = np.mean([math.log1p(math.exp(-(a - b))) for a, b in zip(rw, rl)])
    assert loss.item() == pytest.approx(want, rel=1e-6, abs=1e-6)  # the cache's values are float32


def test_tvkd_across_tokenizers_telescopes_to_the_last_shared_boundary():
    w, _, batch = xbatch()
    m = TVKD()
    cfg = m.make_config({"beta": 0.0, "alpha": 1.0})
    got = m.rewards(batch, cfg, "chosen")
    for b, (z, groups) in enumerate(zip(w.z, w.groups)):
        assert got[b].item() == pytest.approx(-phi(z[groups[-1][1][1]], "soft", 2.0), rel=1e-6)


def test_tvkd_across_tokenizers_gradcheck():
    _, _, batch = xbatch(seed=3)
    m = TVKD()
    cfg = m.make_config({})

    def f(lw, ll):
        b = LossBatch(policy={"chosen": Packed(lw, batch.policy["chosen"].labels, batch.policy["chosen"].seg, 2),
                              "rejected": Packed(ll, batch.policy["rejected"].labels, batch.policy["rejected"].seg, 2)},
                      signals=batch.signals)
        return m.loss(b, cfg)[0]
    assert torch.autograd.gradcheck(f, (batch.policy["chosen"].logits, batch.policy["rejected"].logits))


@pytest.mark.parametrize("settings,needle", [({"gamma": 0.9}, "gamma=1"), ({"value_type": "logit"}, "state value"),
                                             ({"recipe": "authors"}, "recipe=paper")])
def test_tvkd_settings_that_cannot_cross_tokenizers_fail_before_any_work(settings, needle):
    from bench.pipeline.signal_stages import check_cross_tokenizer

    check_cross_tokenizer("tvkd", "t", "s")
    with pytest.raises(BenchError, match="across tokenizers") as e:
        check_cross_tokenizer("tvkd", "t", "s", settings)
    assert needle in str(e.value) and "\n" not in str(e.value)


# ---------------------------------------------------------------- ADPA through the vocabulary map


def xtok_rows(first, sids, logps):
    """xtok rows with the fields topk_from_xtok reads."""
    return {"first": torch.tensor(first), "topk_sids": torch.tensor(sids, dtype=torch.int32),
            "topk_logps": torch.tensor(logps, dtype=torch.float32)}


# rows 0 and 2 start spans (teacher top-3 mapped to student ids; −1: no twin), rows 1 and 3 lie inside spans
LABELS = torch.tensor([1, 4, 0, 2])
DPO = xtok_rows([True, False, True, False], [[2, -1, 5], [-1] * 3, [0, 3, -1], [-1] * 3],
                [[-0.5, -1.5, -2.5], [0] * 3, [-0.2, -2.0, -3.0], [0] * 3])
REF = xtok_rows([True, False, True, False], [[5, 2, -1], [-1] * 3, [6, -1, 3], [-1] * 3],
                [[-0.7, -1.2, -2.0], [0] * 3, [-0.4, -1.9, -2.2], [0] * 3])


def adpa_by_hand(logits: torch.Tensor) -> list[float]:
    """Σ_{a∈K_t} π_θ(a)·A_t(a) per row by a loop over the twins: K_t = the DPO teacher's mapped ids, log π_ref from
    the reference's mapped ids, else the smallest of its real log-probs (fill ref_min); 0 inside spans."""
    logp = torch.log_softmax(logits.detach(), -1)
    out = []
    for i in range(len(LABELS)):
        if not DPO["first"][i]:
            out.append(0.0)
            continue
        ref = {int(a): float(lp) for a, lp in zip(REF["topk_sids"][i], REF["topk_logps"][i]) if a >= 0}
        total = 0.0
        for a, lp in zip(DPO["topk_sids"][i].tolist(), DPO["topk_logps"][i].tolist()):
            if a >= 0:
                total += math.exp(float(logp[i, a])) * (lp - ref.get(a, min(ref.values())))
        out.append(total)
    return out


def adpa_batch(logits):
    n = len(LABELS)
    p = Packed(logits, LABELS, torch.zeros(n, dtype=torch.long), 1)
    sig = {SignalSpec("dpo_teacher", "chosen", "topk").name: topk_from_xtok(DPO, LABELS),
           SignalSpec("ref_teacher", "chosen", "topk").name: topk_from_xtok(REF, LABELS)}
    return LossBatch(policy={"chosen": p}, signals=sig)


def test_adpa_through_the_map_is_the_advantage_over_twins_at_span_starts():
    logits = (torch.randn(4, 8, generator=torch.Generator().manual_seed(1), dtype=D) * 1.5).requires_grad_(True)
    m = ADPA()
    cfg = m.make_config({"state_source": "chosen", "gamma": 1.0})
    loss, parts = m.loss(adpa_batch(logits), cfg)
    nll = -torch.log_softmax(logits.detach(), -1).gather(-1, LABELS[:, None]).mean().item()
    want = np.mean(adpa_by_hand(logits))
    assert parts["expected_adv"] == pytest.approx(want, abs=1e-6)
    assert loss.item() == pytest.approx(nll - want, abs=1e-6)


@pytest.mark.parametrize("variant", ["adpa", "no_ref", "q_argmax", "q_softmax"])
def test_adpa_variants_through_the_map_are_finite_and_pass_gradcheck(variant):
    logits = (torch.randn(4, 8, generator=torch.Generator().manual_seed(2), dtype=D) * 1.5).requires_grad_(True)
    m = ADPA()
    cfg = m.make_config({"state_source": "chosen", "variant": variant})
    loss, _ = m.loss(adpa_batch(logits), cfg)
    assert math.isfinite(loss.item())
    assert torch.autograd.gradcheck(lambda x: m.loss(adpa_batch(x), cfg)[0], (logits,))


def test_adpa_q_argmax_through_the_map_picks_the_best_twin_and_the_own_token_inside_spans():
    logits = torch.randn(4, 8, generator=torch.Generator().manual_seed(4), dtype=D)
    m = ADPA()
    cfg = m.make_config({"state_source": "chosen", "variant": "q_argmax", "gamma": 1.0})
    _, parts = m.loss(adpa_batch(logits), cfg)
    logp = F.log_softmax(logits, -1)
    # row 0: A(2) = −0.5 − (−1.2) = 0.7, A(5) = −2.5 − (−0.7) = −1.8 → 2; row 2: A(0) = −0.2 − (−2.2) = 2.0 (ref_min),
    # A(3) = −2.0 − (−2.2) = 0.2 → 0; rows 1 and 3: their own tokens 4 and 2
    want = -(logp[0, 2] + logp[1, 4] + logp[2, 0] + logp[3, 2]).item() / 4
    assert parts["q_ce"] == pytest.approx(want, abs=1e-9)


def test_sequence_logps_of_another_tokenizer_sum_the_spans():
    from bench.signals.xtok import logps_from_xtok

    x = {"first": torch.tensor([True, False, True]), "span_logp": torch.tensor([-1.0, -9.0, -2.5])}
    assert logps_from_xtok(x)["logps"].tolist() == [-1.0, 0.0, -2.5]  # per sequence: the span log-probs' sum

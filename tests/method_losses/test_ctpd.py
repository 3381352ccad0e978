"""CTPD (methods/ctpd.py): the loss against a float64 loop over aligned spans written from the paper's equations, its
one-tokenizer cases (TIS-DPO with the teacher's weights and reference; uniform weights against the student = DPO),
rows in no span, the authors' rounding, a gradient check, and its settings."""
from __future__ import annotations

import math

import pytest
import torch

from bench.errors import BenchError
from bench.method import LossBatch, SignalSpec
from bench.signals.xtok import project_example
from bench.tensors import Packed
from methods.ctpd import CTPD
from methods.dpo import dpo_loss

pytestmark = pytest.mark.usefixtures("one_thread")
D = torch.float64
TEACHERS = ("dpo_teacher", "rdpo_teacher", "ref_teacher")

# (student rows, teacher tokens, groups ((s0, s1), (t0, t1))): a 2-row span, a 1-to-2 span, EOS; a side cut after
# its last shared boundary (row 2 in no span); every row its own span (one tokenizer)
SPEC_W = [(4, 4, [((0, 2), (0, 1)), ((2, 3), (1, 3)), ((3, 4), (3, 4))]),
          (3, 5, [((0, 1), (0, 3)), ((1, 2), (3, 4))])]
SPEC_L = [(3, 3, [((0, 1), (0, 1)), ((1, 2), (1, 2)), ((2, 3), (2, 3))]), (2, 1, [((0, 2), (0, 1))])]


class Side:
    """Student logits and labels, each teacher's per-token log-probs on its own tokenization, the xtok rows."""

    def __init__(self, spec, V, gen):
        self.spec = spec
        self.lengths = [n for n, _, _ in spec]
        n = sum(self.lengths)
        seg = torch.repeat_interleave(torch.arange(len(spec)), torch.tensor(self.lengths))
        self.packed = Packed(logits=(torch.randn(n, V, generator=gen, dtype=D) * 1.5).requires_grad_(True),
                             labels=torch.randint(0, V, (n,), generator=gen), seg=seg, n_seq=len(spec))
        self.sref = -torch.rand(n, generator=gen, dtype=D) * 3  # the SFT student's log-probs of the rows
        self.t = {m: [-torch.rand(nt, generator=gen, dtype=D) * 3 for _, nt, _ in spec] for m in TEACHERS}
        self.xtok = {}
        for m in TEACHERS:
            rows = [project_example(g, ns, torch.zeros(nt, 2, dtype=torch.int32), torch.zeros(nt, 2, dtype=D), lp,
                                    torch.full((3,), -1), 0.0) for (ns, nt, g), lp in zip(spec, self.t[m])]
            self.xtok[m] = {key: torch.cat([r[key] for r in rows]) for key in rows[0]}

    def signals(self, side):
        out = {SignalSpec(m, side, "xtok").name: self.xtok[m] for m in TEACHERS}
        out[SignalSpec("reference", side, "logps").name] = {"logps": self.sref}
        return out


def make(seed=0, spec_w=SPEC_W, spec_l=SPEC_L, V=6):
    g = torch.Generator().manual_seed(seed)
    w, l = Side(spec_w, V, g), Side(spec_l, V, g)
    batch = LossBatch(policy={"chosen": w.packed, "rejected": l.packed},
                      signals={**w.signals("chosen"), **l.signals("rejected")})
    return w, l, batch


def loop_rewards(side: Side, sign: float, beta=None, mu=1.0, k=1.0, lo=-0.5, hi=1.5, anchor="ref_teacher",
                 weights="contrast", round_w=False):
    """r(x, y) = Σ_g w_g [log π_θ(g) − log π_ref(g)] by a loop over each example's spans (plain floats)."""
    logp = torch.log_softmax(side.packed.logits.detach(), -1).gather(-1, side.packed.labels[:, None]).squeeze(-1)
    out, start = [], 0
    for b, (ns, _, groups) in enumerate(side.spec):
        r = 0.0
        for (s0, s1), (t0, t1) in groups:
            span = lambda m: float(side.t[m][b][t0:t1].sum())
            if weights == "contrast":
                d = min(max(span("dpo_teacher") - span("rdpo_teacher"), lo), hi)
                w = k * math.exp(sign * mu * d)
                w = round(w * 100) / 100 if round_w else w
            else:
                w = k
            pol = float(logp[start + s0:start + s1].sum())
            ref = float(side.sref[start + s0:start + s1].sum()) if anchor == "student" else span(anchor)
            r += w * (pol - ref)
        out.append(r)
        start += ns
    return out


def loop_loss(w, l, beta, **kw):
    rw, rl = loop_rewards(w, 1.0, **kw), loop_rewards(l, -1.0, **kw)
    return sum(math.log1p(math.exp(-beta * (a - b))) for a, b in zip(rw, rl)) / len(rw)


@pytest.mark.parametrize("settings", [{}, {"anchor": "dpo_teacher"}, {"anchor": "student"}, {"weights": "uniform"},
                                      {"mu": 2.0, "k": 0.5, "clamp_low": -0.2, "clamp_high": 0.3, "beta": 0.7}])
def test_ctpd_matches_a_float64_loop_over_aligned_spans(settings):
    w, l, batch = make()
    m = CTPD()
    cfg = m.make_config(settings)
    loss, logs = m.loss(batch, cfg)
    kw = {"mu": cfg.mu, "k": cfg.k, "lo": cfg.clamp_low, "hi": cfg.clamp_high, "anchor": cfg.anchor,
          "weights": cfg.weights}
    assert loss.dtype == D
    assert loss.item() == pytest.approx(loop_loss(w, l, cfg.beta, **kw), rel=1e-12, abs=1e-12)
    assert 0.0 <= logs["reward_acc"] <= 1.0


def test_ctpd_rounds_weights_as_the_authors_code_does():
    w, l, batch = make(seed=2)
    m = CTPD()
    got, _ = m.loss(batch, m.make_config({"round_weights": True}))
    plain, _ = m.loss(batch, m.make_config({}))
    assert got.item() == pytest.approx(loop_loss(w, l, 0.1, round_w=True), rel=1e-12)
    assert got.item() != pytest.approx(plain.item(), rel=1e-9)  # the rounding changes something here


def test_rows_in_no_span_enter_no_reward():
    _, _, batch = make()
    m = CTPD()
    cfg = m.make_config({})
    before = m.rewards(batch, cfg, "chosen")[0].detach()
    logits = batch.policy["chosen"].logits.detach().clone()
    logits[6] += torch.randn(6, dtype=D) * 5  # row 2 of example 1: after its last shared boundary
    p = batch.policy["chosen"]
    moved = LossBatch(policy={"chosen": Packed(logits, p.labels, p.seg, p.n_seq)}, signals=batch.signals)
    assert torch.equal(m.rewards(moved, cfg, "chosen")[0], before)
    logits[5] += torch.randn(6, dtype=D) * 5  # a row inside a span does move it
    moved = LossBatch(policy={"chosen": Packed(logits, p.labels, p.seg, p.n_seq)}, signals=batch.signals)
    assert not torch.equal(m.rewards(moved, cfg, "chosen")[0], before)


def one_to_one(n_rows):
    return [(n, n, [((i, i + 1), (i, i + 1)) for i in range(n)]) for n in n_rows]


def test_one_tokenizer_is_tis_dpo_with_the_teachers_token_weights():
    w, l, batch = make(seed=4, spec_w=one_to_one([3, 2]), spec_l=one_to_one([2, 4]))
    m = CTPD()
    loss, _ = m.loss(batch, m.make_config({}))

    def tis_reward(side, sign):  # Σ_t w_t (log π_θ(y_t) − log π_ref(y_t)) with TIS-DPO's token weights
        logp = torch.log_softmax(side.packed.logits.detach(), -1).gather(-1, side.packed.labels[:, None]).squeeze(-1)
        pos, neg, ref = (torch.cat(side.t[k]) for k in TEACHERS)
        wt = torch.exp(sign * (pos - neg).clamp(-0.5, 1.5))
        return torch.zeros(side.packed.n_seq, dtype=D).index_add(0, side.packed.seg, wt * (logp - ref))

    want = -torch.nn.functional.logsigmoid(0.1 * (tis_reward(w, 1.0) - tis_reward(l, -1.0))).mean()
    assert loss.item() == pytest.approx(want.item(), rel=1e-12)


def test_one_tokenizer_uniform_weights_against_the_student_is_dpo():
    w, l, batch = make(seed=5, spec_w=one_to_one([3, 2]), spec_l=one_to_one([2, 4]))
    m = CTPD()
    loss, _ = m.loss(batch, m.make_config({"weights": "uniform", "anchor": "student", "beta": 0.3}))
    pw, pl = (s.packed.sequence_logps().detach() for s in (w, l))
    rw, rl = (torch.zeros(2, dtype=D).index_add(0, s.packed.seg, s.sref) for s in (w, l))
    assert loss.item() == pytest.approx(dpo_loss(pw, pl, rw, rl, 0.3).mean().item(), rel=1e-12)


def test_ctpd_gradcheck():
    _, _, batch = make(seed=3)
    m = CTPD()
    cfg = m.make_config({"beta": 0.5})

    def f(lw, ll):
        pw, pl = batch.policy["chosen"], batch.policy["rejected"]
        b = LossBatch(policy={"chosen": Packed(lw, pw.labels, pw.seg, pw.n_seq),
                              "rejected": Packed(ll, pl.labels, pl.seg, pl.n_seq)}, signals=batch.signals)
        return m.loss(b, cfg)[0]
    assert torch.autograd.gradcheck(f, (batch.policy["chosen"].logits, batch.policy["rejected"].logits))


def test_teachers_with_different_spans_are_refused():
    _, _, batch = make()
    bad = dict(batch.signals)
    name = SignalSpec("rdpo_teacher", "chosen", "xtok").name
    bad[name] = {**bad[name], "group": torch.zeros_like(bad[name]["group"])}
    with pytest.raises(BenchError, match="aligned spans"):
        CTPD().loss(LossBatch(policy=batch.policy, signals=bad), CTPD().make_config({}))


def test_ctpd_declarations_and_settings():
    m = CTPD()
    names = {s.name for s in m.signals(m.make_config({}))}
    assert names == {f"{t}.xtok.{s}" for t in TEACHERS for s in ("chosen", "rejected")}
    student = {s.name for s in m.signals(m.make_config({"anchor": "student"}))}
    assert "reference.logps.chosen" in student and not any(n.startswith("ref_teacher") for n in student)
    assert {s.model for s in m.signals(m.make_config({"weights": "uniform", "anchor": "student"}))} == {
        "dpo_teacher", "reference"}
    with pytest.raises(BenchError, match="clamp_low"):
        m.make_config({"clamp_low": 1.0, "clamp_high": 0.0})
    with pytest.raises(BenchError, match="choose one of"):
        m.make_config({"anchor": "teacher"})


def test_ctpd_runs_across_tokenizers():
    from bench.pipeline.signal_stages import check_cross_tokenizer

    for settings in ({}, {"anchor": "student"}, {"weights": "uniform"}):
        check_cross_tokenizer("ctpd", "gemma3-270m", "smollm2-135m", settings)

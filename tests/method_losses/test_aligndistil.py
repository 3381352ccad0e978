"""AlignDistil (methods/aligndistil.py, bench/signals/contrast.py): the composed target and the loss against a float64
computation written from the equations (full-vocabulary softmaxes, exact reverse KL, per-sequence token means), the
k+1-bin reduction, a gradient check, the declarations and the settings errors."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from bench.errors import BenchError
from bench.method import LossBatch, SignalSpec
from bench.signals.contrast import contrast_rows
from distill_kit import packed, teacher_logits
from methods.aligndistil import AlignDistil, aligndistil_loss

pytestmark = pytest.mark.usefixtures("one_thread")


def ref_target(z_d, z_r, beta2, T):
    a = beta2 * (F.softmax(z_d, -1) - F.softmax(z_r, -1)).abs().sum(-1) + 1e-3
    return F.log_softmax((z_d + a[:, None] * (z_d - z_r)) / T, -1), a


def target_signal(z_d, z_r, beta2, T, k):
    """contrast_rows in float64 (the cache stores float16 log-probs; the equations are checked here exactly)."""
    logp, a = ref_target(z_d, z_r, beta2, T)
    vals, ids = logp.topk(k, -1)
    rest = torch.stack([torch.logsumexp(logp[i][[v for v in range(logp.shape[1]) if v not in ids[i].tolist()]], 0)
                        for i in range(logp.shape[0])])
    return {"topk_ids": ids.int(), "topk_logps": vals, "log_tail": rest, "weight": a}


def test_contrast_rows_match_the_equations():
    z_d, z_r = teacher_logits(6, 9, 1), teacher_logits(6, 9, 2)
    rows = contrast_rows(z_d, z_r, k=4, beta2=10.0, temperature=0.7)
    logp, a = ref_target(z_d, z_r, 10.0, 0.7)
    assert torch.allclose(rows["weight"].double(), a, atol=1e-5)
    assert torch.equal(rows["topk_ids"].long(), logp.topk(4, -1).indices)
    assert torch.allclose(rows["topk_logps"].double(), logp.topk(4, -1).values, rtol=1e-6)
    want_tail = target_signal(z_d, z_r, 10.0, 0.7, 4)["log_tail"]
    assert torch.allclose(rows["log_tail"].double(), want_tail, rtol=1e-6)
    assert ((a >= 1e-3) & (a <= 20.0 + 1e-3)).all()


@pytest.mark.parametrize("skip_first", [False, True])
def test_loss_is_the_per_sequence_mean_of_beta_over_a_times_the_exact_reverse_kl(skip_first):
    V, lengths = 8, (3, 2)
    p = packed(lengths, V, 3)
    z_d, z_r = teacher_logits(5, V, 4), teacher_logits(5, V, 5)
    target = target_signal(z_d, z_r, 10.0, 1.0, V - 1)  # k = V - 1: the k+1 bins are the whole vocabulary
    got = aligndistil_loss(p, target, beta=0.1, skip_first=skip_first)
    logp, a = ref_target(z_d, z_r, 10.0, 1.0)
    logq = F.log_softmax(p.logits.detach(), -1)
    kl = (logq.exp() * (logq - logp)).sum(-1)
    per = 0.1 / a * kl
    seqs = [(0, 3), (3, 5)]
    want = sum(per[s + int(skip_first):e].mean() for s, e in seqs) / 2
    assert got.item() == pytest.approx(want.item(), abs=1e-10)


def test_small_k_bins_give_a_lower_bound_of_the_full_reverse_kl():
    V = 10
    p = packed((4,), V, 6)
    z_d, z_r = teacher_logits(4, V, 7), teacher_logits(4, V, 8)
    full = aligndistil_loss(p, target_signal(z_d, z_r, 10.0, 1.0, V - 1), 0.1, False)
    small = aligndistil_loss(p, target_signal(z_d, z_r, 10.0, 1.0, 3), 0.1, False)
    assert 0.0 <= small.item() <= full.item() + 1e-12


def test_aligndistil_gradcheck():
    V = 6
    base = packed((2, 2), V, 9)
    target = target_signal(teacher_logits(4, V, 10), teacher_logits(4, V, 11), 10.0, 1.0, 3)

    def f(z):
        return aligndistil_loss(type(base)(z, base.labels, base.seg, base.n_seq), target, 0.1, False)

    z = base.logits.detach().clone().requires_grad_(True)
    assert torch.autograd.gradcheck(f, (z,), eps=1e-6, atol=1e-6)


def test_the_plugin_reads_its_contrast_signal_and_declares_both_teachers():
    m = AlignDistil()
    cfg = m.make_config({"beta2": 15.0})
    (spec,) = m.signals(cfg)
    assert spec.kind == "contrast" and spec.args == ("rdpo_teacher", 15.0, 1.0) and spec.side == "chosen"
    assert m.required_models(cfg) == {"reference", "dpo_teacher", "rdpo_teacher"}
    p = packed((3,), 7, 12)
    target = target_signal(teacher_logits(3, 7, 13), teacher_logits(3, 7, 14), 15.0, 1.0, 4)
    loss, metrics = m.loss(LossBatch(policy={"chosen": p}, signals={spec.name: target}), cfg)
    assert loss.item() == pytest.approx(aligndistil_loss(p, target, 0.1, False).item())
    assert metrics["a_mean"] == pytest.approx(float(target["weight"].mean()))
    samples = m.make_config({"responses": "student_samples"})
    assert m.sides(samples) == ("sample:sft_student:1:1.0:0",) and "sft_student" in m.required_models(samples)
    assert SignalSpec("dpo_teacher", "chosen", "topk").name == "dpo_teacher.topk.chosen"  # plain names unchanged


@pytest.mark.parametrize("overrides,needle", [({"temperature": 0.0}, "temperature=0"), ({"beta2": -1.0}, "beta2=-1"),
                                              ({"reverse_teacher": "dpo_teacher"}, "reverse_teacher")])
def test_bad_aligndistil_settings_are_one_line_errors(overrides, needle):
    with pytest.raises(BenchError, match=needle) as e:
        AlignDistil().make_config(overrides)
    assert "\n" not in str(e.value)

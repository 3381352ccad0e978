"""Numerics of every registered loss: a bfloat16 policy must not round the cached float32 signals down or
accumulate sequence sums in bfloat16. The same logits as bfloat16 and as float32 (bf16 values are exact in
float32) must give the same loss up to float32 arithmetic; before the fix, reference sequence log-probs near
−300 nats were cast to bf16 (spacing 2 there) and the policy's token log-probs were computed in bf16."""
from __future__ import annotations

import pytest
import torch

from bench.method import LossBatch
from bench.registry import get_method, method_names
from bench.tensors import Packed

pytestmark = pytest.mark.usefixtures("one_thread")

V, K = 40, 6
LENGTHS = (150, 180)  # long responses: sequence log-probs of a few hundred nats


def _side(gen, dtype):
    n = sum(LENGTHS)
    seg = torch.repeat_interleave(torch.arange(len(LENGTHS)), torch.tensor(LENGTHS))
    logits = (torch.randn(n, V, generator=gen) * 3).to(torch.bfloat16).to(dtype)
    return Packed(logits.requires_grad_(True), torch.randint(0, V, (n,), generator=gen), seg, len(LENGTHS))


def _signal(kind, packed, gen, tau=2.0):
    n = packed.labels.numel()
    if kind == "logps":  # float32, not representable in bf16: −1.7xxx per token
        return {"logps": -1.7 - torch.rand(n, generator=gen)}
    if kind == "topk":
        from bench.signals.compute import topk_signal
        return topk_signal(torch.randn(n, V, generator=gen) * 3, K)
    if kind == "values":
        from bench.signals.compute import value_signal
        out = {k: [] for k in ("v_soft", "v_lse", "v_max", "v_expect", "v_margin", "z_label")}
        vseg, vpos, row = [], [], 0
        for b, T in enumerate(LENGTHS):
            z = torch.randn(T + 1, V, generator=gen) * 3 + 5
            nxt = torch.cat([packed.labels[row:row + T], torch.tensor([-1])])
            for key, t in value_signal(z, nxt, tau).items():
                out[key].append(t)
            vseg.append(torch.full((T + 1,), b))
            vpos.append(torch.arange(T + 1))
            row += T
        return {**{k: torch.cat(v) for k, v in out.items()}, "vseg": torch.cat(vseg), "vpos": torch.cat(vpos)}
    if kind == "xtok":  # a teacher of another vocabulary (V + 3 ids, some unmapped), spans of one and two tokens
        from bench.signals.xtok import project_example
        parts = []
        for T in LENGTHS:
            t = torch.log_softmax(torch.randn(T, V + 3, generator=gen) * 3, -1)
            top = t.topk(K, -1)
            groups = [((i, min(i + 2, T)), (i // 2, i // 2 + 1)) for i in range(0, T, 2)]
            to_student = torch.cat([torch.arange(V), torch.full((3,), -1)])
            parts.append(project_example(groups, T, top.indices, top.values, t[:, 0], to_student, 0.7))
        return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
    if kind == "contrast":  # AlignDistil's target from two random teachers
        from bench.signals.contrast import contrast_rows
        return contrast_rows(torch.randn(n, V, generator=gen) * 3, torch.randn(n, V, generator=gen) * 3, K, 10.0, 1.0)
    raise AssertionError(kind)


def _batch(method, cfg, dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    sides = set(method.sides(cfg)) | {s.side for s in method.signals(cfg)}
    policy = {side: _side(gen, dtype) for side in sorted(sides)}
    signals = {s.name: _signal(s.kind, policy[s.side], gen) for s in method.signals(cfg)}
    ref = {}
    if method.reference(cfg) == "online":
        ref = {side: Packed(_side(gen, dtype).logits.detach(), p.labels, p.seg, p.n_seq) for side, p in policy.items()}
    return LossBatch(policy=policy, signals=signals, ref=ref)


CASES = [(m, {}) for m in method_names()] + [
    ("tvkd", {"value_type": "logprob"}), ("tvkd", {"reference": "none", "value_type": "margin"}),
    ("tvkd", {"recipe": "authors"}), ("adpa", {"variant": "q_softmax"}), ("gkd", {"beta": 0.0}),
    ("dpkd", {"sft_weight": 1.0}), ("distillm2", {"srkl_mix": "detached"})]


@pytest.mark.parametrize("name,overrides", CASES, ids=[f"{m}-{o}" if o else m for m, o in CASES])
def test_bfloat16_policy_matches_float32_of_the_same_logits(name, overrides):
    method = get_method(name)
    cfg = method.make_config(overrides)
    got = {}
    for dtype in (torch.bfloat16, torch.float32):
        batch = _batch(method, cfg, dtype)
        loss, _ = method.loss(batch, cfg)
        loss.backward()
        assert loss.dtype == torch.float32 and torch.isfinite(loss)
        got[dtype] = (loss.item(), {k: p.logits.grad.float() for k, p in batch.policy.items()})
    assert got[torch.bfloat16][0] == pytest.approx(got[torch.float32][0], rel=1e-5, abs=1e-6)
    for side, grad in got[torch.float32][1].items():  # gradients reach a bf16 leaf rounded to bf16 only
        torch.testing.assert_close(got[torch.bfloat16][1][side], grad, rtol=1e-2, atol=1e-5)


def test_dpo_reference_sums_are_not_rounded_to_the_policy_dtype():
    from methods.dpo import sequence_logps

    method = get_method("dpo")
    batch = _batch(method, method.make_config({}), torch.bfloat16)
    pi, ref = sequence_logps(batch, "chosen")
    cached = batch.signal("reference", "logps", "chosen")["logps"].double()
    want = torch.zeros(len(LENGTHS), dtype=torch.float64).index_add(0, batch.policy["chosen"].seg, cached)
    assert ref.dtype == torch.float32 and pi.dtype == torch.float32
    assert (want.abs() > 250).all()  # the regime where bf16's spacing is 2 nats
    torch.testing.assert_close(ref.double(), want, rtol=1e-6, atol=1e-4)

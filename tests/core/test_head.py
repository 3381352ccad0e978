"""The chunked LM head (bench/head.py): every method's loss on chunked rows (hidden states + head, logits made a few
rows at a time, backward recomputed per chunk) equals the same loss on dense [N, V] logits, in value and in the
gradients w.r.t. the hidden states, the head weight and bias (float64, several chunks, uneven last chunk); the
largest [*, V] tensor any op creates is one chunk (counted with a dispatch mode, no timing involved); the real
packed forward of a tiny Llama gives the same loss and parameter gradients chunked and dense."""
from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from bench.head import HeadRows
from bench.method import LossBatch
from bench.registry import get_method, method_names
from bench.signals.contrast import contrast_rows
from bench.signals.xtok import project_example
from bench.signals.compute import topk_signal, value_signal
from bench.tensors import Packed, full_kl
from bench.train.trainer import values_index

pytestmark = pytest.mark.usefixtures("one_thread")

V, D, K, B, CHUNK = 37, 6, 5, 3, 4
D64 = torch.float64

# settings that switch a loss onto another code path (defaults always run)
VARIANTS = {
    "adpa": [{"variant": "no_ref"}, {"variant": "q_argmax"}, {"variant": "q_softmax"}, {"state_source": "chosen"}],
    "gkd": [{"beta": 0.0}, {"beta": 1.0}, {"mix": "split"}],
    "tvkd": [{"recipe": "authors"}, {"value_type": "logprob"}, {"reference": "none"}],
    "distillm2": [{"srkl_mix": "detached", "reduction": "token"}],
    "wpo": [{"clamp_weight": False}],
    "dpkd": [{"sft_weight": 1.0}],
    "tdpo": [{"variant": "tdpo1"}],
    "atkd": [{"sft_weight": 0.0}],
}
CASES = [(m, {}) for m in method_names()] + [(m, s) for m, vs in VARIANTS.items() for s in vs]


class Inputs:
    """Random float64 hidden states and head (with bias) for every side and constant signals, shared by both paths."""

    def __init__(self, method, cfg, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.w = (torch.randn(V, D, generator=g, dtype=D64) * 0.7).requires_grad_(True)
        self.b = (torch.randn(V, generator=g, dtype=D64) * 0.3).requires_grad_(True)
        self.sides, self.signals = {}, {}
        for side in dict.fromkeys([*method.sides(cfg), *(s.side for s in method.signals(cfg))]):
            lengths = torch.randint(1, 7, (B,), generator=g).tolist()
            n = sum(lengths)
            self.sides[side] = dict(
                h=(torch.randn(n, D, generator=g, dtype=D64) * 1.5).requires_grad_(True),
                labels=torch.randint(0, V, (n,), generator=g), lengths=lengths,
                seg=torch.repeat_interleave(torch.arange(B), torch.tensor(lengths)),
                ref_h=torch.randn(n, D, generator=g, dtype=D64))
        for spec in method.signals(cfg):
            s = self.sides[spec.side]
            n = s["labels"].numel()
            z = torch.randn(n, V, generator=g, dtype=D64) * 2
            if spec.kind == "topk":
                sig = topk_signal(z, K)
            elif spec.kind == "logps":
                sig = {"logps": torch.log_softmax(z, -1).gather(-1, s["labels"][:, None]).squeeze(-1).float()}
            elif spec.kind == "contrast":
                sig = contrast_rows(z, torch.randn(n, V, generator=g, dtype=D64) * 2, K, 10.0, 1.0)
            elif spec.kind == "xtok":  # a teacher with 3 more ids (unmapped), spans of two student tokens
                parts = []
                for T in s["lengths"]:
                    t = torch.log_softmax(torch.randn(T, V + 3, generator=g, dtype=D64) * 2, -1)
                    top = t.topk(K, -1)
                    groups = [((i, min(i + 2, T)), (i // 2, i // 2 + 1)) for i in range(0, T, 2)]
                    to_student = torch.cat([torch.arange(V), torch.full((3,), -1)])
                    parts.append(project_example(groups, T, top.indices, top.values, t[:, 1], to_student, 0.6))
                sig = {key: torch.cat([p[key] for p in parts]) for key in parts[0]}
            else:
                states = torch.randn(n + B, V, generator=g, dtype=D64) * 2
                vseg, vpos = values_index(s["lengths"])
                nxt = torch.full((n + B,), -1)
                nxt[vpos < torch.tensor(s["lengths"])[vseg]] = s["labels"]
                sig = {**value_signal(states, nxt, 2.0), "vseg": vseg, "vpos": vpos}
            self.signals[spec.name] = sig

    def batch(self, chunked: bool) -> LossBatch:
        def packed(h, s, need_grad=True):
            if chunked:
                return Packed.from_head(HeadRows(h, self.w, self.b, chunk_rows=CHUNK), s["labels"], s["seg"], B)
            return Packed(h @ self.w.T + self.b, s["labels"], s["seg"], B)
        policy = {side: packed(s["h"], s) for side, s in self.sides.items()}
        with torch.no_grad():
            ref = {side: packed(s["ref_h"], s) for side, s in self.sides.items()}
        return LossBatch(policy=policy, signals=self.signals, ref=ref)

    def leaves(self):
        return [self.w, self.b, *(s["h"] for s in self.sides.values())]


@pytest.mark.parametrize("name,settings", CASES, ids=[f"{m}-{s}" if s else m for m, s in CASES])
def test_chunked_loss_and_gradients_equal_dense(name, settings):
    method = get_method(name)
    cfg = method.make_config(settings)
    inp = Inputs(method, cfg)
    assert any(s["labels"].numel() > CHUNK for s in inp.sides.values())  # several chunks per side
    results = []
    for chunked in (False, True):
        loss, metrics = method.loss(inp.batch(chunked), cfg)
        grads = torch.autograd.grad(loss, inp.leaves(), allow_unused=True)
        results.append((loss.detach(), metrics, grads))
    (l_d, m_d, g_d), (l_c, m_c, g_c) = results
    assert l_c.dtype == D64
    torch.testing.assert_close(l_c, l_d, rtol=1e-12, atol=1e-12)
    assert m_c.keys() == m_d.keys()
    for key in m_d:
        assert m_c[key] == pytest.approx(m_d[key], rel=1e-9, abs=1e-12), key
    used = 0
    for gd, gc in zip(g_d, g_c):
        if gd is None:
            assert gc is None or not gc.abs().any()
            continue
        used += 1
        torch.testing.assert_close(gc, gd, rtol=1e-10, atol=1e-12)
    assert used >= 3  # weight, bias and at least one side's hidden states get a gradient


def test_chunked_row_ops_gradcheck():
    """torch.autograd.gradcheck through two row ops sharing one side's hub (token log-probs + top-k bins)."""
    from bench.tensors import sparse_kl
    g = torch.Generator().manual_seed(4)
    h = torch.randn(7, D, generator=g, dtype=D64, requires_grad=True)
    w = torch.randn(V, D, generator=g, dtype=D64, requires_grad=True)
    labels = torch.randint(0, V, (7,), generator=g)
    sig = topk_signal(torch.randn(7, V, generator=g, dtype=D64), K)

    def f(h, w):
        p = Packed.from_head(HeadRows(h, w, chunk_rows=3), labels, torch.zeros(7, dtype=torch.long), 1)
        kl = sparse_kl(p, sig["topk_ids"], sig["topk_logps"], sig["tail"])
        return (p.token_logps() * 0.3 + kl).sum()
    assert torch.autograd.gradcheck(f, (h, w))


class LargestLogits(TorchDispatchMode):
    """Records the most rows of any tensor an op allocates (views are not allocations) whose last dimension is the
    vocabulary size."""

    def __init__(self, vocab):
        super().__init__()
        self.vocab, self.rows = vocab, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func.is_view:
            return out
        for t in (out if isinstance(out, (tuple, list)) else (out,)):
            if isinstance(t, torch.Tensor) and t.dim() >= 2 and t.shape[-1] == self.vocab:
                self.rows = max(self.rows, t.numel() // self.vocab)
        return out


@pytest.mark.parametrize("name", ["sft", "dckd", "adpa", "tvkd", "gkd", "tdpo", "distillm2", "atkd", "wpo"])
def test_no_op_makes_more_than_one_chunk_of_logits(name):
    """Forward and backward of a chunked loss never create a [*, V] tensor taller than one chunk; the dense path
    does (the counter can fail)."""
    method = get_method(name)
    cfg = method.make_config({})
    inp = Inputs(method, cfg, seed=1)
    biggest = max(s["labels"].numel() for s in inp.sides.values())
    for chunked, bound in ((True, CHUNK), (False, None)):
        batch = inp.batch(chunked)
        with LargestLogits(V) as seen:
            loss, _ = method.loss(batch, cfg)
            torch.autograd.grad(loss, inp.leaves(), allow_unused=True)
        if bound is None:
            assert seen.rows >= biggest
        else:
            assert 0 < seen.rows <= bound


def test_full_kl_of_two_chunked_models_equals_dense():
    """The value_kl / TDPO form: both sides' logits made one chunk at a time."""
    g = torch.Generator().manual_seed(2)
    hp, hq = torch.randn(9, D, generator=g, dtype=D64), torch.randn(9, D, generator=g, dtype=D64)
    wp, wq = torch.randn(V, D, generator=g, dtype=D64), torch.randn(V, D, generator=g, dtype=D64)
    lab, seg = torch.zeros(9, dtype=torch.long), torch.zeros(9, dtype=torch.long)
    p = Packed.from_head(HeadRows(hp, wp, chunk_rows=2), lab, seg, 1)
    q = Packed.from_head(HeadRows(hq, wq, chunk_rows=2), lab, seg, 1)
    for tau in (1.0, 2.0):
        torch.testing.assert_close(full_kl(p, q, tau), full_kl(hp @ wp.T, hq @ wq.T, tau), rtol=1e-12, atol=1e-12)


def test_a_gradient_carrying_argument_is_refused():
    h = torch.randn(4, D, dtype=D64, requires_grad=True)
    w = torch.randn(V, D, dtype=D64)
    p = Packed.from_head(HeadRows(h, w), torch.zeros(4, dtype=torch.long), torch.zeros(4, dtype=torch.long), 1)
    with pytest.raises(ValueError, match="constants"):
        p.rows(lambda z, x: (z * x[:, None]).sum(-1), torch.ones(4, dtype=D64, requires_grad=True))


@pytest.mark.parametrize("name", ["dpo", "dckd", "tdpo", "gkd"])
def test_real_packed_forward_chunked_equals_dense(name):
    """A tiny float64 Llama with tied embeddings: the loss and every parameter gradient agree between the chunked
    and the dense packed forward (the head weight gets its gradient through both the head and the embedding)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from bench.modeling.forward import pad_batch, packed_forward
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=V, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=True, pad_token_id=0)
    model = LlamaForCausalLM(cfg).double().train()
    ref = LlamaForCausalLM(cfg).double().eval()
    method = get_method(name)
    mcfg = method.make_config({})
    inp = Inputs(method, mcfg, seed=3)
    g = torch.Generator().manual_seed(5)
    batches = {side: pad_batch([(torch.randint(1, V, (3,), generator=g).tolist(), s["labels"][s["seg"] == b].tolist())
                                for b in range(B)], 0) for side, s in inp.sides.items()}
    out = []
    for chunked in (False, True):
        policy = {side: packed_forward(model, bt, chunked=chunked) for side, bt in batches.items()}
        with torch.no_grad():
            refs = {side: packed_forward(ref, bt, chunked=chunked) for side, bt in batches.items()}
        assert (policy[next(iter(policy))].head is not None) == chunked
        loss, _ = method.loss(LossBatch(policy=policy, signals=inp.signals, ref=refs), mcfg)
        out.append((loss.detach(), torch.autograd.grad(loss, list(model.parameters()))))
    torch.testing.assert_close(out[1][0], out[0][0], rtol=1e-12, atol=1e-12)
    for gc, gd in zip(out[1][1], out[0][1]):
        torch.testing.assert_close(gc, gd, rtol=1e-9, atol=1e-12)

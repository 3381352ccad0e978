"""The cached top-k signal: float16 log-probs rounded toward −inf and a tail derived from the STORED values, so the
k+1 bins of a real cache entry (written by bench/signals/compute.py, read back through the cache) sum to 1 and the sparse
KL of a student that matches them exactly is 0; k is validated."""
from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from bench.errors import BenchError
from bench.signals.cache import SignalEntry, write_entry
from bench.signals.compute import check_k, compute_side_signals, round_down_half, topk_signal
from bench.tensors import sparse_kl

pytestmark = pytest.mark.usefixtures("single_thread_module")

V, K, PAD = 64, 8, 0


def sharp_model(scale: float):
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=V, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=128, tie_word_embeddings=True, pad_token_id=PAD)
    m = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        m.model.embed_tokens.weight.mul_(scale)
    return m


def real_entry(tmp_path, scale=40.0):
    model = sharp_model(scale)
    g = torch.Generator().manual_seed(3)
    pairs = [(torch.randint(1, V, (p,), generator=g).tolist(), torch.randint(1, V, (r,), generator=g).tolist())
             for p, r in [(4, 9), (3, 12), (6, 7), (2, 10)]]

    def fill(writers):
        compute_side_signals(model, pairs, writers, k=K, tau=2.0, pad_id=PAD, batch_size=3, model_key="t", desc="t")
    entry = SignalEntry(write_entry(tmp_path / "entry", {"t": 1}, fill))
    return model, pairs, entry.gather("topk", list(range(len(pairs))))


def perfect_student(sig) -> torch.Tensor:
    """float64 logits whose full softmax puts exactly the stored masses on the top-k ids and spreads the stored tail
    evenly over the other V−k ids (a student matching the cached teacher bins)."""
    n = sig["topk_ids"].shape[0]
    rest = torch.log(sig["tail"].double() / (V - K))[:, None].expand(n, V).clone()
    return rest.scatter(1, sig["topk_ids"].long(), sig["topk_logps"].double())


@pytest.mark.parametrize("scale", [40.0, 5.0])
def test_bins_of_a_real_cache_entry_sum_to_one_and_match_exactly(tmp_path, scale):
    model, pairs, sig = real_entry(tmp_path, scale)
    stored = sig["topk_logps"].double().exp().sum(-1)
    assert (sig["tail"] >= 0).all()
    # the float32 tail is the only rounding left: |Σ bins − 1| ≤ 2^-24
    torch.testing.assert_close(stored + sig["tail"].double(), torch.ones_like(stored), rtol=0, atol=2 ** -24)
    for reverse in (False, True):
        kl = sparse_kl(perfect_student(sig), sig["topk_ids"], sig["topk_logps"], sig["tail"], reverse=reverse)
        assert kl.abs().max() < 1e-7

    if scale > 10:
        return  # a very peaked teacher: float16 is fine near log-prob 0, the old tail was nearly right there
    # the old tail (1 − Σ of the UNROUNDED float32 top-k probs) next to the same float16 values: the bins do not sum
    # to 1 and a matching student has a non-zero (even negative) KL — what this test would have caught
    from bench.modeling.forward import pad_batch, packed_forward
    with torch.no_grad():
        logits = packed_forward(model, pad_batch(pairs, PAD)).dense_logits()
    old_tail = (1 - torch.log_softmax(logits.float(), -1).topk(K, -1).values.exp().sum(-1)).clamp(min=0)
    old = dict(sig, tail=old_tail)
    assert (stored + old_tail.double() - 1).abs().max() > 1e-5
    assert sparse_kl(perfect_student(old), old["topk_ids"], old["topk_logps"], old["tail"]).abs().max() > 1e-5


def test_round_down_half_is_one_float16_step_at_most():
    x = -torch.rand(20000, dtype=torch.float64) * 30
    x[:5] = torch.tensor([0.0, -1e-9, -6e-8, -2.0, -65504.0], dtype=torch.float64)
    h = round_down_half(x.float())
    assert h.dtype == torch.float16 and (h.double() <= x.float().double()).all()
    up = torch.nextafter(h, torch.full_like(h, float("inf")))
    assert (up.double() > x.float().double()).all()  # the next float16 up is above: h is the largest below


def test_topk_signal_validates_k():
    z = torch.randn(3, 10)
    assert topk_signal(z, 10)["topk_ids"].shape == (3, 10)
    for bad in (0, -1, 11):
        with pytest.raises(BenchError, match="between 1 and the vocabulary size 10"):
            topk_signal(z, bad)
    for bad in (2.5, "8", True):
        with pytest.raises(BenchError):
            check_k(bad, 10)


@pytest.mark.slow
def test_embedded_teacher_cache_entry_bins_sum_to_one(tmp_path, embedded_dirs):
    """The same properties on the real embedded teacher (SmolLM2-135M-Instruct, V = 49152, k = 50) over chosen
    responses of the embedded preference data."""
    from bench.config import RunConfig
    from bench.modeling.models import load_model
    from bench.pipeline.graph import Pipeline

    pipe = Pipeline(RunConfig(method="dpo", student="smollm2-135m-l12", runs_dir=str(tmp_path)))
    pairs = pipe.side_pairs(pipe.teacher_pref, "chosen", {})[:24]  # the gold pairs: no π_ref to build
    model = load_model(embedded_dirs["smollm2-135m"]).eval()
    k = 50

    def fill(writers):
        compute_side_signals(model, pairs, writers, k=k, tau=2.0, pad_id=pipe.tok.pad_token_id, batch_size=8,
                             model_key="embedded", desc="t")
    sig = SignalEntry(write_entry(tmp_path / "entry", {"t": 1}, fill)).gather("topk", list(range(len(pairs))))
    stored = sig["topk_logps"].double().exp().sum(-1)
    dev = (stored + sig["tail"].double() - 1).abs().max().item()
    n, vocab = sig["topk_ids"].shape[0], model.config.vocab_size
    rest = torch.log(sig["tail"].double().clamp(min=1e-300) / (vocab - k))[:, None].expand(n, vocab).clone()
    student = rest.scatter(1, sig["topk_ids"].long(), sig["topk_logps"].double())
    kl = sparse_kl(student, sig["topk_ids"], sig["topk_logps"], sig["tail"]).abs().max().item()
    print(f"embedded teacher, {n} tokens: max |Σ bins − 1| = {dev:.3g}, max |KL| at a perfect match = {kl:.3g}")
    assert dev <= 2 ** -24 and kl < 1e-7

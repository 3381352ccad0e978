"""bench/modeling/forward.py + bench/tensors.py: packed logits equal the full model's logits where a loss reads them."""
from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from bench.modeling.forward import pad_batch, packed_forward
from bench.tensors import Packed, seg_mean, seg_sum, token_logps

pytestmark = pytest.mark.usefixtures("single_thread_module")

PAD = 0


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=128, tie_word_embeddings=False, pad_token_id=PAD)
    return LlamaForCausalLM(cfg).eval()


def make_pairs(seed=0, lens=((5, 3), (2, 6), (9, 1), (4, 4))):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randint(1, 97, (p,), generator=g).tolist(), torch.randint(1, 97, (r,), generator=g).tolist())
            for p, r in lens]


def full_logits(model, prompt, resp):
    ids = torch.tensor([prompt + resp])
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[0]


def test_pad_batch_layout():
    pairs = make_pairs()
    b = pad_batch(pairs, PAD)
    L = max(len(p) + len(r) for p, r in pairs)
    assert b.input_ids.shape == (4, L) and b.n_seq == 4
    for i, (p, r) in enumerate(pairs):
        n = len(p) + len(r)
        assert b.input_ids[i, :n].tolist() == p + r
        assert b.attention_mask[i].tolist() == [1] * n + [0] * (L - n)
        assert (b.input_ids[i, n:] == PAD).all()
        assert b.final_pos[i] == n - 1
    assert b.labels.tolist() == [t for _, r in pairs for t in r]
    assert b.row_b.tolist() == [i for i, (_, r) in enumerate(pairs) for _ in r]
    # position P-1+t predicts response token t
    assert b.row_pos.tolist() == [len(p) - 1 + t for p, r in pairs for t in range(len(r))]
    assert b.n_tokens == sum(len(p) + len(r) for p, r in pairs)


def test_packed_logits_equal_the_full_model_at_response_positions(model):
    pairs = make_pairs()
    b = pad_batch(pairs, PAD)
    with torch.no_grad():
        packed = packed_forward(model, b)
        dense = model(input_ids=b.input_ids, attention_mask=b.attention_mask).logits
    assert isinstance(packed, Packed) and packed.n_seq == 4
    N = sum(len(r) for _, r in pairs)
    assert packed.dense_logits().shape == (N, 97) and packed.dense_logits().dtype == torch.float32
    torch.testing.assert_close(packed.dense_logits(), dense[b.row_b, b.row_pos], atol=1e-5, rtol=0)
    assert packed.labels.tolist() == [t for _, r in pairs for t in r]
    assert packed.seg.tolist() == [i for i, (_, r) in enumerate(pairs) for _ in r]
    assert packed.lengths().tolist() == [len(r) for _, r in pairs]
    # each sequence alone, unpadded: same rows
    row = 0
    for p, r in pairs:
        ref = full_logits(model, p, r)[len(p) - 1:len(p) + len(r) - 1]
        torch.testing.assert_close(packed.dense_logits()[row:row + len(r)], ref, atol=1e-5, rtol=0)
        row += len(r)


def test_padding_does_not_change_a_sequence(model):
    short, long = make_pairs(seed=3, lens=((3, 2), (12, 9)))
    with torch.no_grad():
        alone = packed_forward(model, pad_batch([short], PAD))
        both = packed_forward(model, pad_batch([short, long], PAD))
        swapped = packed_forward(model, pad_batch([long, short], PAD))
    torch.testing.assert_close(both.dense_logits()[both.seg == 0], alone.dense_logits(), atol=1e-5, rtol=0)
    torch.testing.assert_close(swapped.dense_logits()[swapped.seg == 1], alone.dense_logits(), atol=1e-5, rtol=0)
    torch.testing.assert_close(swapped.dense_logits()[swapped.seg == 0], both.dense_logits()[both.seg == 1], atol=1e-5, rtol=0)


def test_with_final_is_the_state_after_the_last_token(model):
    pairs = make_pairs()
    b = pad_batch(pairs, PAD)
    with torch.no_grad():
        packed, final = packed_forward(model, b, with_final=True)
        plain = packed_forward(model, b)
    assert final.shape == (4, 97)
    torch.testing.assert_close(packed.dense_logits(), plain.dense_logits())
    for i, (p, r) in enumerate(pairs):
        torch.testing.assert_close(final[i], full_logits(model, p, r)[-1], atol=1e-5, rtol=0)


def test_packed_forward_carries_gradients(model):
    b = pad_batch(make_pairs(), PAD)
    model.zero_grad()
    out = packed_forward(model, b)
    (-out.token_logps().mean()).backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)
    model.zero_grad()


def test_token_logps_and_segment_helpers():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(7, 11, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 11, (7,), generator=g)
    ref = torch.log_softmax(logits, -1)[torch.arange(7), labels]
    torch.testing.assert_close(token_logps(logits, labels), ref)
    x = torch.arange(7, dtype=torch.float64)
    seg = torch.tensor([0, 0, 0, 2, 2, 3, 3])
    assert seg_sum(x, seg, 5).tolist() == [3.0, 0.0, 7.0, 11.0, 0.0]
    assert seg_mean(x, seg, 5).tolist() == [1.0, 0.0, 3.5, 5.5, 0.0]
    p = Packed(logits=logits, labels=labels, seg=seg, n_seq=5)
    assert p.lengths().tolist() == [3.0, 0.0, 2.0, 2.0, 0.0]

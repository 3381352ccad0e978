"""bench/modeling/generate.py + bench/scoring/metrics.py: batched greedy generation equals one-by-one generation; reward accuracy
and the verified score."""
from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from bench.errors import BenchError
from bench.modeling.generate import HFGenerator, decode, make_generator
from bench.scoring.metrics import mean_logps, reward_accuracy, verified_scores

pytestmark = pytest.mark.usefixtures("single_thread_module")

V, PAD, EOS = 64, 0, 2


class Tok:
    """The few tokenizer attributes the generator reads."""

    pad_token_id, eos_token_id = PAD, EOS


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=V, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=128, tie_word_embeddings=True, pad_token_id=PAD,
                      eos_token_id=EOS, bos_token_id=1)
    m = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        m.model.embed_tokens.weight.mul_(30)  # peaked, input-dependent greedy choices
    return m


def prompts():
    g = torch.Generator().manual_seed(3)
    return [torch.randint(3, V, (n,), generator=g).tolist() for n in (7, 2, 11, 4, 9)]


def test_batched_left_padded_generation_equals_one_by_one(model):
    ps = prompts()
    batched = HFGenerator(model, Tok(), batch_size=3).generate(ps, 8)
    single = [HFGenerator(model, Tok(), batch_size=1).generate([p], 8)[0] for p in ps]
    assert batched == single
    assert len(set(map(tuple, single))) > 1  # the prompts really lead to different outputs
    for out in batched:
        assert 1 <= len(out) <= 8
        assert EOS not in out[:-1]  # cut right after the first EOS


def test_generation_is_cut_after_eos(model):
    ps = prompts()
    full = HFGenerator(model, Tok(), batch_size=5).generate(ps, 8)
    # force EOS to be the argmax everywhere (a hook on the LM head): every output is exactly [EOS]
    bias = torch.zeros(V)
    bias[EOS] = 1e4
    handle = model.lm_head.register_forward_hook(lambda mod, inp, out: out + bias)
    try:
        outs = HFGenerator(model, Tok(), batch_size=5).generate(ps, 8)
    finally:
        handle.remove()
    assert outs == [[EOS]] * len(ps)
    assert HFGenerator(model, Tok(), batch_size=5).generate(ps, 8) == full


def test_make_generator_and_decode(model, tiny_tokenizer):
    assert isinstance(make_generator("hf", model, Tok(), batch_size=2), HFGenerator)
    with pytest.raises(BenchError, match="unknown generation backend 'vllm-nope'"):
        make_generator("vllm-nope", model, Tok())
    ids = tiny_tokenizer("  42 ", add_special_tokens=False)["input_ids"] + [tiny_tokenizer.eos_token_id]
    assert decode(tiny_tokenizer, ids) == "42"


def test_reward_accuracy_and_mean_logps(model):
    g = torch.Generator().manual_seed(1)
    ps = prompts()
    # chosen: the model's own greedy continuation (high log-prob); rejected: random tokens
    greedy = HFGenerator(model, Tok(), batch_size=5).generate(ps, 4)
    chosen = list(zip(ps, greedy))
    rejected = [(p, torch.randint(3, V, (4,), generator=g).tolist()) for p in ps]
    lw, ll = mean_logps(model, chosen, PAD, batch_size=2), mean_logps(model, rejected, PAD, batch_size=5)
    assert lw.shape == ll.shape == (5,)
    # mean log-prob per sequence equals a per-sequence computation
    for i, (p, r) in enumerate(chosen):
        with torch.no_grad():
            logits = model(torch.tensor([p + r])).logits[0, len(p) - 1:-1]
        want = torch.log_softmax(logits, -1)[torch.arange(len(r)), torch.tensor(r)].mean()
        assert lw[i].item() == pytest.approx(want.item(), abs=1e-5)
    res = reward_accuracy(model, chosen, rejected, PAD)
    assert res["n"] == 5 and res["score"] == pytest.approx(float((lw > ll).float().mean()))
    assert res["score"] == 1.0 and res["margin"] > 0
    flipped = reward_accuracy(model, rejected, chosen, PAD)
    assert flipped["score"] == 0.0 and flipped["margin"] == pytest.approx(-res["margin"], abs=1e-6)
    assert reward_accuracy(model, chosen, chosen, PAD)["score"] == 0.0  # ties are not wins
    with pytest.raises(BenchError, match="pref_val is empty"):
        reward_accuracy(model, [], [], PAD)


def test_verified_scores_need_suite_rows():
    from bench.data.suite import build_suite

    rows = build_suite(seed=0, sizes={"sft": 0, "pref_train": 0, "pref_val": 0, "test": 12}).split("test")
    answers = [r["meta"].get("answer", "") for r in rows]
    res = verified_scores(rows, ["definitely wrong"] * len(rows))
    assert 0.0 <= res["score"] <= 1.0 and res["n"] == len(rows)
    assert set(res["per_family"]) == {r["meta"]["family"] for r in rows}
    with pytest.raises(BenchError, match="embedded-suite prompts"):
        verified_scores([{"id": "x", "prompt": [], "meta": {}}], ["a"])
    assert answers  # the suite rows carry their checker fields

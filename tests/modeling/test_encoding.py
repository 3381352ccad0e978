"""bench/modeling/encoding.py: chat template on prompts, explicit left/right truncation, counts, one-line errors."""
from __future__ import annotations

import copy

import pytest

from bench.modeling.encoding import Encoder
from bench.errors import BenchError

pytestmark = pytest.mark.usefixtures("single_thread_module")

GEN_PROMPT = "<|im_start|>assistant\n"


def msgs(text: str, system: str | None = None) -> list[dict]:
    out = [{"role": "system", "content": system}] if system else []
    return out + [{"role": "user", "content": text}]


@pytest.fixture()
def tok(tiny_tokenizer):
    return tiny_tokenizer


def test_chat_template_is_applied_to_prompts(tok):
    enc = Encoder(tok, max_prompt_len=512, max_response_len=32)
    ids = enc.prompt_ids(msgs("What is 2+2?", system="Be terse."), "r1")
    text = tok.decode(ids)
    assert text == ("<|im_start|>system\nBe terse.<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n"
                    + GEN_PROMPT)
    assert ids[0] == tok.convert_tokens_to_ids("<|im_start|>")
    assert all(isinstance(i, int) for i in ids)
    # identical to the tokenizer's own template rendering
    ref = tok.apply_chat_template(msgs("What is 2+2?", system="Be terse."), add_generation_prompt=True,
                                  tokenize=False)
    assert text == ref


def test_long_prompt_is_cut_from_the_left_keeping_the_generation_prompt(tok):
    long = " ".join(f"word{i}" for i in range(200))
    full = Encoder(tok, max_prompt_len=4096, max_response_len=32).prompt_ids(msgs(long))
    enc = Encoder(tok, max_prompt_len=40, max_response_len=32)
    ids = enc.prompt_ids(msgs(long), "long-row")
    assert len(full) > 40 and len(ids) == 40
    assert ids == full[-40:]
    assert tok.decode(ids).endswith("word199<|im_end|>\n" + GEN_PROMPT)
    assert enc.stats.prompts == 1 and enc.stats.prompts_truncated == 1


def test_response_ends_with_eos_and_is_cut_from_the_right(tok):
    enc = Encoder(tok, max_prompt_len=64, max_response_len=6)
    short = enc.response_ids("42", "a")
    assert short[-1] == tok.eos_token_id and tok.decode(short[:-1]) == "42"
    plain = tok("one two three four five six seven eight", add_special_tokens=False)["input_ids"]
    cut = enc.response_ids("one two three four five six seven eight", "b")
    assert len(plain) + 1 > 6
    assert cut == plain[:6]  # the first tokens survive (the EOS is what gets cut)
    assert enc.stats.responses == 2 and enc.stats.responses_truncated == 1


def test_truncation_counts(tok):
    enc = Encoder(tok, max_prompt_len=40, max_response_len=4)
    enc.prompt_ids(msgs("short"), "1")
    enc.prompt_ids(msgs("x " * 100), "2")
    enc.prompt_ids(msgs("also short"), "3")
    enc.response_ids("ok", "1")
    enc.response_ids("a b c d e f g h", "2")
    enc.response_ids("fine", "3")
    assert enc.stats.to_dict() == {"prompts": 3, "prompts_truncated": 1, "responses": 3, "responses_truncated": 1}


@pytest.mark.parametrize("text", ["", "   ", "\n\t", None])
def test_empty_response_is_a_bench_error_naming_the_row(tok, text):
    enc = Encoder(tok, max_prompt_len=64, max_response_len=8)
    with pytest.raises(BenchError) as e:
        enc.response_ids(text, "row-17")
    assert "row row-17" in str(e.value) and "empty response" in str(e.value)
    assert enc.stats.responses == 0


def test_long_prompt_error_mode_names_max_prompt_len(tok):
    enc = Encoder(tok, max_prompt_len=40, max_response_len=8, on_long_prompt="error")
    assert len(enc.prompt_ids(msgs("hi"), "ok")) <= 40  # a prompt that fits is kept whole
    with pytest.raises(BenchError) as e:
        enc.prompt_ids(msgs("y " * 80), "row-9")
    msg = str(e.value)
    assert "row row-9" in msg and "max_prompt_len=40" in msg and "\n" not in msg
    assert enc.stats.prompts_truncated == 0


def test_short_budgets_and_missing_template_are_refused(tok):
    with pytest.raises(BenchError, match="max_prompt_len"):
        Encoder(tok, max_prompt_len=4, max_response_len=8)
    with pytest.raises(BenchError, match="max_response_len"):
        Encoder(tok, max_prompt_len=64, max_response_len=1)
    no_template = copy.deepcopy(tok)
    no_template.chat_template = None
    with pytest.raises(BenchError, match="chat template"):
        Encoder(no_template, max_prompt_len=64, max_response_len=8)


def test_cap_response_and_fingerprint(tok):
    enc = Encoder(tok, max_prompt_len=64, max_response_len=3)
    assert enc.cap_response([5, 6, 7, 8, 9]) == [5, 6, 7]
    assert enc.cap_response([]) == [tok.eos_token_id]
    fp = enc.fingerprint()
    assert fp["max_prompt_len"] == 64 and fp["max_response_len"] == 3 and fp["eos"] == tok.eos_token_id
    assert fp != Encoder(tok, max_prompt_len=64, max_response_len=4).fingerprint()


def test_prompt_ids_are_stable_for_equal_messages(tok):
    enc = Encoder(tok, max_prompt_len=512, max_response_len=8)
    a = enc.prompt_ids(msgs("same"), "a")
    b = enc.prompt_ids([dict(m) for m in msgs("same")], "b")
    c = enc.prompt_ids(msgs("different"), "c")
    assert a == b and a != c


def test_system_prompt_setting_adds_a_system_turn_only_where_a_prompt_has_none(tok):
    default = Encoder(tok, max_prompt_len=512, max_response_len=8)
    empty = Encoder(tok, max_prompt_len=512, max_response_len=8, system_prompt="")
    terse = Encoder(tok, max_prompt_len=512, max_response_len=8, system_prompt="Be terse.")
    assert tok.decode(empty.prompt_ids(msgs("Hi"))) == ("<|im_start|>system\n<|im_end|>\n<|im_start|>user\nHi"
                                                        "<|im_end|>\n" + GEN_PROMPT)
    assert terse.prompt_ids(msgs("Hi")) == default.prompt_ids(msgs("Hi", system="Be terse."))
    # a prompt that brings its own system turn keeps it
    assert terse.prompt_ids(msgs("Hi", system="Own.")) == default.prompt_ids(msgs("Hi", system="Own."))
    # the default's fingerprint has no system_prompt entry (earlier cache keys stay valid); set ones differ
    assert "system_prompt" not in default.fingerprint()
    assert len({str(e.fingerprint()) for e in (default, empty, terse)}) == 3


def test_system_prompt_must_be_text(tok):
    with pytest.raises(BenchError, match="system_prompt=42 must be text"):
        Encoder(tok, max_prompt_len=64, max_response_len=8, system_prompt=42)


def test_a_text_response_is_encoded_or_is_the_eos_alone(tok):
    enc = Encoder(tok, max_prompt_len=64, max_response_len=8)
    assert enc.text_response_ids("42") == enc.response_ids("42")
    assert enc.text_response_ids("   ") == [tok.eos_token_id]

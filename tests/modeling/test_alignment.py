"""Cross-tokenizer alignment (bench.modeling.alignment): boundaries from character offsets, aligned spans, the
vocabulary map; synthetic offsets, the real SmolLM2 tokenizer and a small SentencePiece-style tokenizer built
here; the real Gemma-3 tokenizer in a slow test."""
from __future__ import annotations

import pytest

from bench.modeling.alignment import Alignment, align_offsets, align_text, clean_ends, token_bytes, vocab_map


# ---------------------------------------------------------------- boundaries and spans from offsets
def test_overlapping_byte_tokens_end_on_no_boundary():
    # "a 😀": byte-level BPE gives 'a' (0,1), 'Ġ\xf0..' (1,3), '\x80' (2,3): the middle token's end is inside the
    # next token, so only the last of the two ends on a boundary
    assert clean_ends([(0, 1), (1, 3), (2, 3)]) == [True, False, True]
    # zero-width tokens (specials) never end on a boundary and do not hide the next token's start
    assert clean_ends([(0, 0), (0, 2), (2, 2), (2, 4)]) == [False, True, False, True]


def test_spans_cover_the_same_characters():
    # text "ab cd": student 'ab' ' c' 'd' ; teacher 'a' 'b' ' cd'
    al = align_offsets([(0, 2), (2, 4), (4, 5)], [(0, 1), (1, 2), (2, 5)])
    assert al.student == ((0, 1), (1, 3)) and al.teacher == ((0, 2), (2, 3))
    assert al.student_on_boundary == (True, False, True) and al.aligned_share == pytest.approx(2 / 3)
    assert al.one_to_one() == []
    same = align_offsets([(0, 2), (2, 5)], [(0, 2), (2, 5)])
    assert same.one_to_one() == [(0, 0), (1, 1)] and same.aligned_share == 1.0


def test_span_boundaries_skip_overlapping_ends():
    # student splits the 2-char emoji into two overlapping tokens, teacher keeps one token
    al = align_offsets([(0, 1), (1, 3), (2, 3), (3, 4)], [(0, 1), (1, 3), (3, 4)])
    assert al.student == ((0, 1), (1, 3), (3, 4)) and al.teacher == ((0, 1), (1, 2), (2, 3))
    assert al.student_on_boundary == (True, False, True, True)
    assert Alignment((), (), ()).aligned_share == 1.0


def test_real_tokenizer_digits_and_emoji(tiny_tokenizer):
    s_ids, t_ids, al = align_text(tiny_tokenizer, tiny_tokenizer, "What is 17 + 25? 😀")
    assert s_ids == t_ids and len(al.student) == sum(al.student_on_boundary)  # a tokenizer aligns with itself
    enc = tiny_tokenizer("a 😀", add_special_tokens=False, return_offsets_mapping=True)
    ends = clean_ends([tuple(o) for o in enc["offset_mapping"]])
    assert len(ends) == 3 and ends == [True, False, True]  # SmolLM2 splits the emoji in two overlapping tokens


# ---------------------------------------------------------------- the vocabulary map
def sentencepiece_like():
    """A small Metaspace (SentencePiece-style) fast tokenizer with byte-fallback tokens."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<bos>": 1, "<eos>": 2, "<0x0A>": 3, "▁the": 4, "▁cat": 5, "s": 6, "▁": 7, "1": 8, "7": 9,
             "▁17": 10, "the": 11}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Replace(" ", "▁")
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="never")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="never")
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<bos>", eos_token="<eos>")


def test_token_bytes_undo_each_space_marker(tiny_tokenizer):
    sp = sentencepiece_like()
    b = token_bytes(sp)
    assert b[4] == b" the" and b[3] == b"\n" and b[8] == b"1" and b[1] is None and b[2] is None
    bl = token_bytes(tiny_tokenizer)
    the = tiny_tokenizer.convert_tokens_to_ids("Ġthe")
    assert bl[the] == b" the" and bl[tiny_tokenizer.eos_token_id] is None
    # every byte-level token decodes to the bytes the tokenizer itself would decode it to
    for i in (the, tiny_tokenizer.convert_tokens_to_ids("1"), 1000, 20000):
        assert bl[i].decode("utf-8", errors="replace") == tiny_tokenizer.decode([i])


def test_vocab_map_matches_spellings_and_special_roles(tiny_tokenizer):
    sp = sentencepiece_like()
    vm = vocab_map(tiny_tokenizer, sp)
    ids = tiny_tokenizer.convert_tokens_to_ids(["Ġthe", "the", "1", "Ġcat", "Ġdog"])
    assert [int(vm.to_teacher[i]) for i in ids] == [4, 11, 8, 5, -1]
    assert vm.to_teacher[tiny_tokenizer.eos_token_id] == 2  # by role, not by spelling
    assert 0 < vm.coverage < 0.01 and vm.n_special >= 1
    back = vocab_map(sp, tiny_tokenizer)
    assert back.to_teacher[4] == ids[0] and back.to_teacher[3] == tiny_tokenizer.convert_tokens_to_ids("Ċ")


@pytest.mark.slow
def test_gemma_tokenizer_against_smollm2(tiny_tokenizer):
    """The second model family: what the issue measured with both tokenizers' offsets."""
    from bench.modeling.models import load_tokenizer

    gemma = load_tokenizer("gemma3-270m")
    for text in ("What is 17 + 25? Answer with the number only.", "Sort: 10, 9, 100, 1 -> 1, 9, 10, 100"):
        _, _, al = align_text(tiny_tokenizer, gemma, text)
        assert al.aligned_share == 1.0, text
    _, _, al = align_text(tiny_tokenizer, gemma, "a 😀")
    assert al.student_on_boundary == (True, False, True)
    vm = vocab_map(tiny_tokenizer, gemma)
    digits = tiny_tokenizer.convert_tokens_to_ids(list("0123456789"))
    assert all(vm.to_teacher[d] == gemma.convert_tokens_to_ids(str(k)) for k, d in enumerate(digits))
    assert vm.to_teacher[tiny_tokenizer.eos_token_id] == gemma.eos_token_id
    assert 0.5 < vm.coverage < 1.0

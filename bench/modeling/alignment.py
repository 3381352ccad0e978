"""Aligning two tokenizations of the same text (teacher and student from different model families).

Both tokenizers are run with character offsets on the same text. A token *ends on a boundary* when its end offset
is not inside the next token (byte-level BPE splits a multi-byte character such as "😀" into tokens whose offsets
overlap; the first one's end is then no boundary) and it is not a zero-width token. The *shared boundaries* are
the character positions where both tokenizations have a boundary; between two consecutive shared boundaries lies
one aligned span: a run of student tokens and a run of teacher tokens covering exactly the same characters. A loss
can compare the two models span by span (the product of each side's token probabilities over a span is the
probability of the same characters), and token by token where a span holds one token on each side.

The vocabulary map pairs a student token with the teacher token that spells the same bytes, after each
tokenizer's own space marker is undone (byte-level BPE's "Ġ"-alphabet back to bytes; SentencePiece's "▁" to a
space and its <0xNN> byte tokens to bytes); special tokens map by role (bos, eos, pad, unk).
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np


def clean_ends(offsets: list[tuple[int, int]]) -> list[bool]:
    """Per token: does its end offset fall on a boundary of this tokenization?"""
    out, nxt = [False] * len(offsets), None  # nxt: the start of the next non-empty token (scanning backwards)
    for i in range(len(offsets) - 1, -1, -1):
        start, end = offsets[i]
        out[i] = end > start and (nxt is None or nxt >= end)
        if end > start:
            nxt = start
    return out


@dataclass(frozen=True)
class Alignment:
    """Aligned spans of one text: `student[k]` and `teacher[k]` are [start, stop) token index ranges covering the
    same characters; `student_on_boundary[i]` says whether student token i ends on a shared boundary."""

    student: tuple[tuple[int, int], ...]
    teacher: tuple[tuple[int, int], ...]
    student_on_boundary: tuple[bool, ...]

    @property
    def n_student(self) -> int:
        return len(self.student_on_boundary)

    @property
    def aligned_share(self) -> float:
        """Share of student tokens that end on a shared boundary (1.0 for an empty text)."""
        return sum(self.student_on_boundary) / self.n_student if self.n_student else 1.0

    def one_to_one(self) -> list[tuple[int, int]]:
        """(student index, teacher index) of the spans that hold exactly one token on each side."""
        return [(s0, t0) for (s0, s1), (t0, t1) in zip(self.student, self.teacher) if s1 - s0 == 1 and t1 - t0 == 1]


def align_offsets(student: list[tuple[int, int]], teacher: list[tuple[int, int]]) -> Alignment:
    """Align two tokenizations of one text from their character offsets."""
    s_ok, t_ok = clean_ends(student), clean_ends(teacher)
    s_ends = {e for (_, e), ok in zip(student, s_ok) if ok}
    t_ends = {e for (_, e), ok in zip(teacher, t_ok) if ok}
    shared = s_ends & t_ends
    on_boundary = tuple(ok and e in shared for (_, e), ok in zip(student, s_ok))
    s_spans, t_spans = _spans(student, s_ok, shared), _spans(teacher, t_ok, shared)
    common = sorted(set(s_spans) & set(t_spans))  # spans close at the same shared boundary on both sides
    return Alignment(tuple(s_spans[c] for c in common), tuple(t_spans[c] for c in common), on_boundary)


def _spans(offsets, ok, shared) -> dict[int, tuple[int, int]]:
    """Token ranges closed at each shared boundary (keyed by its character position)."""
    spans, start = {}, 0
    for i, ((_, end), good) in enumerate(zip(offsets, ok)):
        if good and end in shared:
            spans[end] = (start, i + 1)
            start = i + 1
    return spans


def align_text(student_tok, teacher_tok, text: str) -> tuple[list[int], list[int], Alignment]:
    """Token ids of `text` under both tokenizers (no special tokens) and their alignment."""
    s = student_tok(text, add_special_tokens=False, return_offsets_mapping=True)
    t = teacher_tok(text, add_special_tokens=False, return_offsets_mapping=True)
    return (list(s["input_ids"]), list(t["input_ids"]),
            align_offsets([tuple(o) for o in s["offset_mapping"]], [tuple(o) for o in t["offset_mapping"]]))


# ---------------------------------------------------------------- vocabulary map
def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level alphabet, inverted (printable stand-ins back to byte values)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs, n = list(bs), 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


def _is_byte_level(tok) -> bool:
    spec = json.loads(tok.backend_tokenizer.to_str())
    parts = [spec.get("decoder") or {}, spec.get("pre_tokenizer") or {}]
    return any("ByteLevel" in json.dumps(p) for p in parts)


def _is_byte_piece(piece: str) -> bool:
    """SentencePiece's byte-fallback tokens: <0x00> .. <0xFF>."""
    return len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">")


def token_bytes(tok) -> list[bytes | None]:
    """Each token id's spelling as bytes (None for special tokens and strings that do not decode)."""
    special = set(tok.all_special_ids)
    pieces = tok.convert_ids_to_tokens(list(range(len(tok))))
    out: list[bytes | None] = []
    if _is_byte_level(tok):
        dec = _byte_decoder()
        for i, p in enumerate(pieces):
            out.append(None if i in special or p is None or any(c not in dec for c in p) else bytes(dec[c] for c in p))
        return out
    for i, p in enumerate(pieces):
        if i in special or p is None:
            out.append(None)
        elif _is_byte_piece(p):
            out.append(bytes([int(p[3:5], 16)]))
        else:
            out.append(p.replace("▁", " ").encode("utf-8"))
    return out


@dataclass(frozen=True)
class VocabMap:
    """`to_teacher[i]` = the teacher id spelling student token i (-1 when none)."""

    to_teacher: np.ndarray
    n_special: int

    @property
    def coverage(self) -> float:
        return float((self.to_teacher >= 0).mean()) if self.to_teacher.size else 0.0


def vocab_map(student_tok, teacher_tok) -> VocabMap:
    """Map every student token to the teacher token with the same bytes (special tokens by role)."""
    s_bytes, t_bytes = token_bytes(student_tok), token_bytes(teacher_tok)
    pieces = teacher_tok.convert_ids_to_tokens(list(range(len(t_bytes))))
    fallback = [p is not None and _is_byte_piece(p) for p in pieces]
    index: dict[bytes, int] = {}
    # a piece the tokenizer really emits ("0") wins over its byte-fallback twin ("<0x30>"); then the lowest id
    for j in sorted(range(len(t_bytes)), key=lambda j: (fallback[j], j)):
        b = t_bytes[j]
        if b is not None and b not in index:
            index[b] = j
    out = np.full(len(s_bytes), -1, dtype=np.int64)
    for i, b in enumerate(s_bytes):
        if b is not None:
            out[i] = index.get(b, -1)
    n_special = 0
    for role in ("bos", "eos", "pad", "unk"):
        si, ti = getattr(student_tok, f"{role}_token_id", None), getattr(teacher_tok, f"{role}_token_id", None)
        if si is not None and ti is not None and out[si] < 0:
            out[si] = ti
            n_special += 1
    return VocabMap(out, n_special)

"""Cross-tokenizer teacher signals: the teacher's per-token signals, computed on its own tokenization of the same
text, projected onto the student's response rows through the character alignment (`bench.modeling.alignment`).

One entry row per student response token (so the trainer gathers it like any signal), kind `xtok`:
  first      [N] bool   the row starts an aligned group (a span between two boundaries both tokenizations share;
                        the EOS of both sides is one last group when neither response was cut)
  group      [N] int32  the row's group index within its example (−1: the row lies in no group)
  topk_ids   [N,k] int32    teacher ids of the teacher's top-k at the group's first teacher position (first rows)
  topk_sids  [N,k] int32    the same ids mapped to the student vocabulary (same bytes; −1: no student token, or
                            a student token an earlier (likelier) entry of the row already maps to)
  topk_logps [N,k] float32  their log-probs (full teacher softmax); −inf on rows that start no group
  later      [N] float32    Σ teacher log-probs of the group's later teacher tokens (0 for a one-token group)
  span_logp  [N] float32    teacher log-prob of the group's whole text (its first token's + `later`)
  pos_logps  [N,k] float32  the teacher's top-k log-probs at the same *position* (row i of each response; ULD's
                            positional pairing), −inf beyond the shorter response
  pos_valid  [N] bool
  match_share [N] float32   the share of the teacher vocabulary with a student twin (the same on every row)
  first_<v>  [N] float32    the teacher's state value v (v_soft, v_lse, v_max, v_expect, v_margin: `values` kind) at
                            the prompt's end, the same on every row of an example
  after_<v>  [N] float32    v at the state after the row, held between shared boundaries: a row that ends a group
                            has the teacher's value after the group's last teacher token; any other row the value
                            at the last shared boundary before it (potentials exist only where both tokenizations
                            are at a state, so TVKD's shaping telescopes over them: `values_from_xtok`)
The teacher's top-k come sorted (descending). Groups follow the alignment's shared boundaries exactly: when the two
tokenizers agree everywhere (the same tokenizer) every row is a one-token group and `topk_sids` are `topk_ids`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from bench.modeling.alignment import align_offsets

STATE_VALUE_FIELDS = ("v_soft", "v_lse", "v_max", "v_expect", "v_margin")  # the `values` kind but z_label
XTOK_FIELDS = ("first", "group", "topk_ids", "topk_sids", "topk_logps", "later", "span_logp", "pos_logps",
               "pos_valid", "match_share", *(f"first_{v}" for v in STATE_VALUE_FIELDS),
               *(f"after_{v}" for v in STATE_VALUE_FIELDS))


@dataclass(frozen=True)
class Tokenized:
    """One response under one tokenizer: its ids (EOS last when `has_eos`) and each text token's char offsets."""

    ids: list[int]
    offsets: list[tuple[int, int]]  # one per text token (the EOS, if any, has none)
    has_eos: bool


def tokenize_response(tok, text: str, max_len: int) -> Tokenized:
    """The Encoder's response ids (`tok(text)` + EOS, cut to `max_len`) with the char offsets of the text tokens."""
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = list(enc["input_ids"]) + [tok.eos_token_id]
    offsets = [tuple(o) for o in enc["offset_mapping"]]
    ids = ids[:max_len]
    return Tokenized(ids, offsets[:min(len(offsets), len(ids))], len(ids) == len(offsets) + 1)


def offsets_for_ids(tok, text: str, ids: list[int], eos_id: int) -> Tokenized | None:
    """Offsets of given student ids of `text` (generated ids), when re-tokenizing the text reproduces them; None
    otherwise (the example then has no aligned groups, only positional rows)."""
    has_eos = bool(ids) and ids[-1] == eos_id
    body = ids[:-1] if has_eos else ids
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    if list(enc["input_ids"][:len(body)]) != list(body):
        return None
    if has_eos and len(enc["input_ids"]) != len(body):
        return None
    return Tokenized(list(ids), [tuple(o) for o in enc["offset_mapping"][:len(body)]], has_eos)


def span_groups(s: Tokenized | None, t: Tokenized) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """Aligned groups ((s0, s1), (t0, t1)) of response rows, EOS group last when both responses end with one and
    every text token before it is aligned on both sides."""
    if s is None:
        return []
    al = align_offsets(s.offsets, t.offsets)
    groups = list(zip(al.student, al.teacher))
    ns, nt = len(s.offsets), len(t.offsets)
    complete = (groups[-1][0][1] == ns and groups[-1][1][1] == nt) if groups else (ns == 0 and nt == 0)
    if s.has_eos and t.has_eos and complete:
        groups.append(((ns, ns + 1), (nt, nt + 1)))
    return groups


def held_values(groups, n_student: int, t_values: dict[str, torch.Tensor], dt: torch.dtype) -> dict[str, torch.Tensor]:
    """`first_<v>` and `after_<v>` rows of one example from the teacher's [T+1] state values (see the module
    docstring): group g = ((s0, s1), (t0, t1)) sets rows s0..s1−2 to the value at teacher state t0 (the group's
    start, a shared boundary) and row s1−1 to the value at state t1; rows after the last group hold its end."""
    out = {}
    for v in STATE_VALUE_FIELDS:
        tv = t_values[v].to(dt)
        after = torch.full((n_student,), float(tv[0]), dtype=dt)
        last_end = 0
        for (s0, s1), (t0, t1) in groups:
            after[s0:s1 - 1] = tv[t0]
            after[s1 - 1] = tv[t1]
            last_end = s1
        if groups:
            after[last_end:] = tv[groups[-1][1][1]]
        out[f"first_{v}"] = torch.full((n_student,), float(tv[0]), dtype=dt)
        out[f"after_{v}"] = after
    return out


def project_example(groups, n_student: int, t_topk_ids: torch.Tensor, t_topk_logps: torch.Tensor,
                    t_logps: torch.Tensor, to_student: torch.Tensor, match_share: float = 0.0,
                    t_values: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """The `xtok` rows of one example from the teacher's rows ([T, k] top-k ids and log-probs, [T] log-probs of the
    actual teacher tokens, [T+1] state values; values absent: NaN) and its groups; `to_student` maps teacher ids to
    student ids (−1: none)."""
    k = t_topk_ids.shape[1]
    dt = torch.promote_types(t_topk_logps.dtype, torch.float32)  # the cache writes float32; tests pass float64
    out = {
        "first": torch.zeros(n_student, dtype=torch.bool),
        "group": torch.full((n_student,), -1, dtype=torch.int32),
        "topk_ids": torch.zeros(n_student, k, dtype=torch.int32),
        "topk_logps": torch.full((n_student, k), float("-inf"), dtype=dt),
        "later": torch.zeros(n_student, dtype=dt),
        "span_logp": torch.zeros(n_student, dtype=dt),
    }
    lp = t_logps.double()
    for g, ((s0, s1), (t0, t1)) in enumerate(groups):
        out["group"][s0:s1] = g
        out["first"][s0] = True
        out["topk_ids"][s0] = t_topk_ids[t0].to(torch.int32)
        out["topk_logps"][s0] = t_topk_logps[t0]
        out["later"][s0] = float(lp[t0 + 1:t1].sum())
        out["span_logp"][s0] = float(lp[t0:t1].sum())
    ids = out["topk_ids"].long()
    known = ids < to_student.numel()  # a head wider than the tokenizer: its extra rows spell nothing
    mapped = torch.where(known, to_student[ids.clamp(max=to_student.numel() - 1)], -1)
    mapped = torch.where(out["first"][:, None], mapped, -1)
    dup = (mapped[:, :, None] == mapped[:, None, :]).tril(-1).any(-1) & (mapped >= 0)  # seen earlier in the row
    out["topk_sids"] = torch.where(dup, -1, mapped).to(torch.int32)
    n = min(n_student, t_topk_logps.shape[0])
    out["pos_logps"] = torch.full((n_student, k), float("-inf"), dtype=dt)
    out["pos_logps"][:n] = t_topk_logps[:n]
    out["pos_valid"] = torch.arange(n_student) < n
    out["match_share"] = torch.full((n_student,), float(match_share), dtype=dt)
    if t_values is None:
        t_values = {v: torch.full((t_topk_logps.shape[0] + 1,), float("nan")) for v in STATE_VALUE_FIELDS}
    out.update(held_values(groups, n_student, t_values, dt))
    return out


def teacher_to_student_map(teacher_tok, student_tok) -> tuple[torch.Tensor, float]:
    """(teacher id -> the student id spelling the same bytes (−1: none; special tokens by role), the share of the
    teacher vocabulary that has such a twin)."""
    from bench.modeling.alignment import vocab_map

    vm = vocab_map(teacher_tok, student_tok)
    return torch.from_numpy(np.asarray(vm.to_teacher, dtype=np.int64)), vm.coverage


class RowCollector:
    """A stand-in for the cache's shard writers: keeps each example's teacher rows in memory, in order."""

    def __init__(self):
        self.rows: list[dict[str, torch.Tensor]] = []

    def add(self, **tensors: torch.Tensor) -> None:
        self.rows.append(tensors)


def alignment_counts(groups_per_example, n_student_rows: list[int]) -> dict[str, float]:
    """Shares of student rows that start an aligned group / lie in one, over a side (printed and kept in the entry)."""
    rows = sum(n_student_rows)
    first = sum(len(g) for g in groups_per_example)
    covered = sum(s1 - s0 for g in groups_per_example for (s0, s1), _ in g)
    return {"student_rows": rows, "group_starts": first, "rows_in_groups": covered,
            "start_share": first / rows if rows else 1.0, "covered_share": covered / rows if rows else 1.0,
            "unaligned_examples": sum(1 for g in groups_per_example if not g)}


FILLER_LOGP = -1.0e4  # a bin of zero teacher mass (exp underflows to 0) whose log stays finite: p·(log p − log q) = 0


def topk_from_xtok(x: dict[str, torch.Tensor], labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """The cache's `topk` layout in the student's vocabulary from `xtok` rows, for forward-KL losses (Vanilla KD,
    DCKD) with a teacher of another tokenizer:
      - a span's first row: the teacher's top-k tokens that have a student twin, their log-probs; the mass of the
        others (no twin, or beyond the top-k) goes to the tail bin;
      - a row inside a span, or in no span: the one-hot of the row's own token (the teacher's tokenization of the
        span fixes how it continues, so the teacher is taken to agree with the response there);
      - the other slots repeat the row's first id with zero teacher mass (log-prob FILLER_LOGP): the student's rest
        bin is the mass outside the set of ids (`bench.tensors.student_bins`), so a repeat adds no bin and the
        forward KL is exactly the one over the real bins plus the rest; `valid` [N, k] marks the real slots (ADPA
        reads only those)."""
    first = x["first"].bool()
    sids, lp = x["topk_sids"].long(), x["topk_logps"].to(torch.float32)
    n, k = sids.shape
    ids = torch.empty(n, k, dtype=torch.int32)
    logps = torch.full((n, k), FILLER_LOGP, dtype=torch.float32)
    tail = torch.zeros(n, dtype=torch.float32)
    valid = torch.zeros(n, k, dtype=torch.bool)
    for i in range(n):
        if first[i]:
            keep = sids[i] >= 0
            real, real_lp = sids[i][keep], lp[i][keep]
            tail[i] = (1.0 - real_lp.double().exp().sum()).clamp(min=0.0).float()
        else:
            real, real_lp = labels[i:i + 1].long(), torch.zeros(1)
        pad = int(real[0]) if len(real) else int(labels[i])
        ids[i] = torch.tensor(real.tolist() + [pad] * (k - len(real)), dtype=torch.int32)
        logps[i, :len(real)] = real_lp
        valid[i, :len(real)] = True
    return {"topk_ids": ids, "topk_logps": logps, "tail": tail, "valid": valid}


def values_from_xtok(x: dict[str, torch.Tensor], lengths: list[int]) -> dict[str, torch.Tensor]:
    """The cache's `values` layout ([T+1] states per example: the prompt's end, then after each row) from `xtok` rows
    of examples with `lengths` rows each; z_label is NaN (no teacher logit exists for a student token)."""
    out, start = {v: [] for v in STATE_VALUE_FIELDS}, 0
    for n in lengths:
        for v in STATE_VALUE_FIELDS:
            out[v] += [x[f"first_{v}"][start:start + 1], x[f"after_{v}"][start:start + n]]
        start += n
    values = {v: torch.cat(parts).to(torch.float32) for v, parts in out.items()}
    values["z_label"] = torch.full_like(values["v_soft"], float("nan"))
    return values


def logps_from_xtok(x: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The cache's `logps` layout from `xtok` rows for methods that read only per-sequence sums of it: a span's log-prob
    on its first row, 0 elsewhere, so a response's sum is the teacher's log-prob of its aligned text (all of it, EOS
    included, when neither side was cut): a sequence log-prob does not depend on the tokenizer."""
    return {"logps": torch.where(x["first"].bool(), x["span_logp"].to(torch.float32), torch.zeros(()))}


class XTopkView:
    """A signal entry that serves `topk` (`topk_from_xtok`), `values` (`values_from_xtok`) and `logps`
    (`logps_from_xtok`) gathers from an `xtok` entry; `labels_of(i)` gives example i's student response ids."""

    def __init__(self, entry, labels_of):
        self.entry, self.labels_of, self.manifest, self.path = entry, labels_of, entry.manifest, entry.path

    def example(self, kind: str, i: int) -> dict[str, torch.Tensor]:
        return self.gather(kind, [i])

    def gather(self, kind: str, indices: list[int]) -> dict[str, torch.Tensor]:
        labels = [torch.as_tensor(self.labels_of(i), dtype=torch.long) for i in indices]
        if kind == "topk":
            return topk_from_xtok(self.entry.gather("xtok", indices), torch.cat(labels))
        if kind == "values":
            return values_from_xtok(self.entry.gather("xtok", indices), [len(x) for x in labels])
        if kind == "logps":
            return logps_from_xtok(self.entry.gather("xtok", indices))
        raise ValueError(f"a cross-tokenizer teacher serves top-k, state values and sequence log-probs, not '{kind}'")

"""Cross-tokenizer reports: how well a teacher's tokenization of a dataset lines up with its student's.

`bench align --student S --teacher T --dataset D` prints, per split and family of the dataset's responses, the
share of student tokens that end on a boundary the teacher's tokenization shares (`bench.modeling.alignment`), the
share of student tokens in one-to-one spans (one token on each side: where token-level losses apply unchanged), and
the vocabulary map's coverage (student tokens, and the data's student tokens, spelled by one teacher token).
"""
from __future__ import annotations

import json
from collections import defaultdict

from bench.errors import BenchError
from bench.modeling.alignment import align_text, vocab_map

SIDES = {"sft": ("response",), "pref_train": ("chosen", "rejected"), "pref_val": ("chosen", "rejected")}


def alignment_report(student_tok, teacher_tok, bundle, limit: int | None = None) -> dict:
    """Counts per (split, family) over every response text of the bundle's splits (first `limit` rows each)."""
    vm = vocab_map(student_tok, teacher_tok)
    counts: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for split, sides in SIDES.items():
        for row in bundle.split(split)[:limit]:
            family = str(row.get("meta", {}).get("family", "-"))
            for side in sides:
                s_ids, t_ids, al = align_text(student_tok, teacher_tok, row[side])
                for key in ((split, family), (split, "all"), ("all", "all")):
                    c = counts[key]
                    c["texts"] += 1
                    c["student_tokens"] += len(s_ids)
                    c["teacher_tokens"] += len(t_ids)
                    c["on_boundary"] += sum(al.student_on_boundary)
                    c["one_to_one"] += len(al.one_to_one())
                    c["mapped"] += int(sum(vm.to_teacher[i] >= 0 for i in s_ids))
    if not counts:
        raise BenchError(f"dataset '{bundle.name}' has no responses in {', '.join(SIDES)}; pass a dataset with "
                         "SFT or preference rows")
    return {"vocab_coverage": vm.coverage, "student_vocab": len(vm.to_teacher),
            "rows": {f"{s}/{f}": dict(c) for (s, f), c in sorted(counts.items())}}


def format_report(report: dict, student: str, teacher: str) -> str:
    lines = [(f"student {student} -> teacher {teacher}: {100 * report['vocab_coverage']:.1f}% of the student's "
              f"{report['student_vocab']:,} tokens are spelled by one teacher token"),
             (f"{'split/family':<22}{'texts':>7}{'student tok':>13}{'teacher tok':>13}{'on boundary':>13}"
              f"{'one-to-one':>12}{'mapped':>9}")]
    for name, c in report["rows"].items():
        n = max(c["student_tokens"], 1)
        lines.append(f"{name:<22}{c['texts']:>7}{c['student_tokens']:>13,}{c['teacher_tokens']:>13,}"
                     f"{100 * c['on_boundary'] / n:>12.1f}%{100 * c['one_to_one'] / n:>11.1f}%"
                     f"{100 * c['mapped'] / n:>8.1f}%")
    return "\n".join(lines)


def align_command(student: str, teacher: str, dataset: str, data_seed: int, limit: int | None, fmt: str) -> str:
    """`bench align`: the report as a table or JSON (bad options: one error)."""
    from bench.data.resolve import resolve_dataset
    from bench.modeling.models import load_tokenizer

    if fmt not in ("table", "json"):
        raise BenchError(f"--format {fmt} is not a format; pass table or json")
    if limit is not None and limit < 1:
        raise BenchError(f"--limit {limit} must be >= 1")
    report = alignment_report(load_tokenizer(student), load_tokenizer(teacher),
                              resolve_dataset(dataset, seed=data_seed), limit=limit)
    return json.dumps(report, indent=1) if fmt == "json" else format_report(report, student, teacher)

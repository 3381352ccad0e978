"""The gap the embedded benchmark offers: verified score per family of every model role and of both sides of the
student's preference pairs, the invariant a benchmark of preference distillation needs (the DPO teacher at least
10 points above the chosen side and at least 80%), the near-miss errors each role makes, and the validation reward
accuracy of the two teachers. Builds (or reuses) the cached stages.

    python benchmarks/headroom.py [--preset embedded] [--set key=value ...] [--json out.json]

Roles: base teacher (as shipped), π_ref (SFT teacher), π_dpo (DPO teacher), base student (as pruned), SFT student.
Greedy generations on the test split are cached like every other stage (kind "generations"), so a second call is
cheap. Prints Markdown tables, then the wall time of each stage this call built.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

ROLES = (("teacher_base", "base teacher"), ("ref_teacher", "π_ref"), ("dpo_teacher", "π_dpo"),
         ("student_base", "base student"), ("sft_student", "SFT student"))


def _enc(pipe, role: str):
    """The encoder a role reads (Pipeline.enc_for), the untrained teacher included: the teacher's for teacher roles
    (another tokenizer when the families differ)."""
    return pipe.tenc if role == "teacher_base" else pipe.enc_for(role)


def base_generations(pipe, role: str) -> list[list[int]]:
    """Greedy test generations of an untrained base model, cached as a "generations" stage."""
    from bench.modeling.generate import make_generator
    from bench.store.files import read_jsonl, write_jsonl
    from bench.store.stages import build_stage, token_hash

    name = pipe.teacher if role == "teacher_base" else pipe.cfg.student
    enc = _enc(pipe, role)
    prompts = pipe.prompts("test", enc)
    gen_cfg = pipe.preset.get("generation", {})
    key = {"model": pipe.base_key(name), "prompts": token_hash(prompts), "max_new": enc.max_response_len,
           "gen": gen_cfg}

    def build(tmp: Path) -> dict:
        t0 = time.perf_counter()
        gen = make_generator(gen_cfg.get("backend", "hf"), pipe.load(role), enc.tokenizer, batch_size=pipe.infer_bs)
        outs = gen.generate(prompts, enc.max_response_len, desc=f"generate {role} on test")
        write_jsonl(tmp / "generations.jsonl", [{"token_ids": o} for o in outs])
        pipe.timings[f"generate:{role}:test"] = time.perf_counter() - t0
        return {"n": len(outs)}

    return [r["token_ids"] for r in read_jsonl(build_stage("generations", key, build) / "generations.jsonl")]


def role_report(pipe, role: str) -> dict:
    from bench.modeling.generate import decode
    from bench.scoring.metrics import verified_scores
    from bench.data.suite import error_kind

    rows = pipe.split_rows("test")
    if role.endswith("_base"):  # decoded by the role's own tokenizer (a teacher of another family has its own)
        texts = [decode(_enc(pipe, role).tokenizer, o) for o in base_generations(pipe, role)]
    else:
        texts = pipe.generation_texts(role, "test")
    res = verified_scores(rows, texts)
    kinds = Counter(error_kind(r["meta"], t) for r, t in zip(rows, texts))
    kinds.pop(None, None)
    res["near_miss_errors"] = dict(kinds)
    res["near_miss_share"] = sum(kinds.values()) / len(rows)
    return res


def teacher_reward_accuracy(pipe, role: str) -> dict:
    """Reward accuracy (mean log-prob of chosen > rejected) on pref_val, overall and per failure type."""
    from bench.scoring.metrics import mean_logps

    rows = pipe.split_rows("pref_val")
    enc = _enc(pipe, role)  # the teacher's own tokenization of the same texts
    chosen, rejected = (pipe.side_pairs("pref_val", side, {}, enc) for side in ("chosen", "rejected"))
    model = pipe.load(role)
    lw = mean_logps(model, chosen, enc.tokenizer.pad_token_id, pipe.infer_bs)
    ll = mean_logps(model, rejected, enc.tokenizer.pad_token_id, pipe.infer_bs)
    wins = (lw > ll).float()
    out = {"score": float(wins.mean()), "margin": float((lw - ll).mean()), "n": len(rows)}
    for failure in sorted({r["meta"]["failure"] for r in rows}):
        idx = [i for i, r in enumerate(rows) if r["meta"]["failure"] == failure]
        out[failure] = float(wins[idx].mean())
    return out


INVARIANT_MARGIN, INVARIANT_FLOOR = 0.10, 0.80  # issue [2/5]: π_dpo ≥ chosen side + 10 points, and ≥ 80%


def pair_sides(rows: list[dict]) -> dict:
    """Mean verified score of the chosen and of the rejected responses of preference rows, overall and per family."""
    from bench.scoring.metrics import pair_side_scores

    return pair_side_scores(rows)


def invariant(teacher: float, chosen: float) -> dict:
    margin = teacher - chosen
    return {"teacher": teacher, "chosen": chosen, "margin": margin,
            "met": margin >= INVARIANT_MARGIN - 1e-12 and teacher >= INVARIANT_FLOOR}


def main(argv=None) -> dict:
    from benchmarks.harness import add_pipeline_options, pipeline_from

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--student", default="smollm2-135m-l12")
    add_pipeline_options(ap)
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    pipe = pipeline_from(args, student=args.student)
    report = {"roles": {}, "reward_accuracy": {}}
    for role, _ in ROLES:
        report["roles"][role] = role_report(pipe, role)
    for role in ("ref_teacher", "dpo_teacher"):
        report["reward_accuracy"][role] = teacher_reward_accuracy(pipe, role)
    report["pairs"] = pair_sides(pipe.split_rows("pref_train"))
    report["invariant"] = invariant(report["roles"]["dpo_teacher"]["score"], report["pairs"]["chosen"]["score"])
    report["timings"] = {k: round(v, 1) for k, v in pipe.timings.items()}
    report["wall_s"] = round(time.perf_counter() - t0, 1)
    print_report(report, pipe)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return report


def print_report(report: dict, pipe) -> None:
    roles = report["roles"]
    fams = sorted({f for r in roles.values() for f in r["per_family"]})
    n = len(pipe.split_rows("test"))
    pairs = report["pairs"]
    print(f"\nVerified score (%) on the {n} test prompts, suite {pipe.bundle.version}, data_seed {pipe.data_seed}; "
          "chosen and rejected side: the student's pref_train pairs\n")
    print("| family | chosen side | rejected side | " + " | ".join(label for _, label in ROLES) + " |")
    print("|---" * (len(ROLES) + 3) + "|")
    for f in fams:
        sides = " | ".join(f"{100 * pairs[s]['per_family'].get(f, float('nan')):.1f}" for s in ("chosen", "rejected"))
        print(f"| {f} | {sides} | " + " | ".join(f"{100 * roles[r]['per_family'][f]:.1f}" for r, _ in ROLES) + " |")
    print(f"| **all** | **{100 * pairs['chosen']['score']:.1f}** | **{100 * pairs['rejected']['score']:.1f}** | "
          + " | ".join(f"**{100 * roles[r]['score']:.1f}**" for r, _ in ROLES) + " |")
    print("| near-miss errors (% of prompts) | "
          + " | ".join(f"{100 * roles[r]['near_miss_share']:.1f}" for r, _ in ROLES) + " |")
    styled_n = next((roles[r].get("styled_n") for r, _ in ROLES if roles[r].get("styled_n")), 0)
    print(f"| house style (% of the {styled_n} styled prompts) | "
          + " | ".join("–" if roles[r].get("house_style") is None else f"{100 * roles[r]['house_style']:.1f}"
                       for r, _ in ROLES) + " |")
    inv = report["invariant"]
    print(f"\nInvariant (π_dpo ≥ chosen side + {100 * INVARIANT_MARGIN:.0f} points and "
          f"≥ {100 * INVARIANT_FLOOR:.0f}%): π_dpo {100 * inv['teacher']:.1f}, chosen side "
          f"{100 * inv['chosen']:.1f}, margin {100 * inv['margin']:+.1f} points: {'met' if inv['met'] else 'NOT met'}")
    kinds = sorted({k for r in roles.values() for k in r["near_miss_errors"]})
    print("\nNear-miss errors by kind (count over the test prompts; the kinds the preference data's rejected "
          "responses model)\n")
    print("| kind | " + " | ".join(label for _, label in ROLES) + " |")
    print("|---" * (len(ROLES) + 1) + "|")
    for k in kinds:
        print(f"| {k} | " + " | ".join(str(roles[r]["near_miss_errors"].get(k, 0)) for r, _ in ROLES) + " |")
    print("\nReward accuracy on pref_val (mean log-prob of chosen > rejected)\n")
    ra = report["reward_accuracy"]
    types = sorted(k for k in ra["ref_teacher"] if k not in ("score", "margin", "n"))
    print("| teacher | all | margin | " + " | ".join(types) + " |")
    print("|---" * (len(types) + 3) + "|")
    for role, label in (("ref_teacher", "π_ref"), ("dpo_teacher", "π_dpo")):
        r = ra[role]
        print(f"| {label} | {100 * r['score']:.1f} | {r['margin']:.3f} | "
              + " | ".join(f"{100 * r[t]:.1f}" for t in types) + " |")
    if report["timings"]:
        print("\nStages built by this call (s): " + ", ".join(f"{k} {v}" for k, v in report["timings"].items()))
    print(f"Wall time of this call: {report['wall_s']} s (OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')})")


if __name__ == "__main__":
    main()

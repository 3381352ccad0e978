"""How good the chosen side of on-policy pairs is: K samples per prompt from a pipeline role (default π_ref, the SFT
teacher), judged by the suite's checker, best against worst, at several K and label-noise rates. The numbers the
embedded suite 3.x design needs: the chosen side must stay well below the DPO teacher (issue [2/5]'s invariant).

    python benchmarks/pair_quality.py [--role ref_teacher] [--samples 4] [--temperature 1.0] [--split SPLIT]
                                      [--preset embedded] [--set key=value ...] [--json out.json]

Samples once with the largest K (cached as a "pairs" stage would be, here as a "pair_samples" stage), then derives
smaller K from the first samples of each prompt, and label noise in expectation (a swapped verdict puts the worse
sample on the chosen side). Prints one Markdown table.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def sampled_scores(pipe, role: str, split: str, k: int, temperature: float, max_new: int) -> list[list[float]]:
    """Verified score of each of the K samples per prompt, cached as a stage."""
    from bench.pipeline.pairs import PairSpec, VerifiedJudge, sample_responses
    from bench.store.files import atomic_write_json
    from bench.store.stages import build_stage, token_hash

    rows = pipe.split_rows(split)
    prompts = [pipe.enc.prompt_ids(r["prompt"], r["id"]) for r in rows]
    spec = PairSpec(samples=k, temperature=temperature, max_new_tokens=max_new, batch_size=pipe.infer_bs)
    key = {"model": pipe.model_key(role), "prompts": token_hash(prompts), "spec": vars(spec)}

    def build(tmp: Path) -> dict:
        t0 = time.perf_counter()
        samples = sample_responses(pipe.load(role), pipe.tok, prompts, spec, desc=f"sample {k}x {role}")
        scores = VerifiedJudge(rows).score(rows, samples)
        atomic_write_json(tmp / "scores.json", {"scores": scores, "samples": samples})
        return {"seconds": round(time.perf_counter() - t0, 1)}

    return json.loads((build_stage("pair_samples", key, build) / "scores.json").read_text())["scores"]


def quality(scores: list[list[float]], k: int, noise: float) -> dict:
    """Pairs from the first k samples: counts and the expected verified score of each side under label noise."""
    chosen, rejected, ties = [], [], 0
    for per in scores:
        s = per[:k]
        hi, lo = max(s), min(s)
        if hi == lo:
            ties += 1
            continue
        chosen.append((1 - noise) * hi + noise * lo)
        rejected.append((1 - noise) * lo + noise * hi)
    n = len(chosen)
    return {"k": k, "noise": noise, "pairs": n, "ties": ties,
            "chosen": sum(chosen) / n if n else float("nan"), "rejected": sum(rejected) / n if n else float("nan")}


def main(argv=None) -> dict:
    from benchmarks.harness import add_pipeline_options, pipeline_from

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--role", default="ref_teacher")
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--split", default=None, help="default: the teachers' pairs (the student pairs' prompts)")
    add_pipeline_options(ap)
    args = ap.parse_args(argv)
    pipe = pipeline_from(args)
    args.split = args.split or pipe.teacher_pref
    t0 = time.perf_counter()
    scores = sampled_scores(pipe, args.role, args.split, args.samples, args.temperature, pipe.enc.max_response_len)
    mean_sample = sum(s for per in scores for s in per) / sum(len(per) for per in scores)
    rows = [quality(scores, k, noise) for k in range(2, args.samples + 1) for noise in (0.0, 0.2, 0.25, 0.3)]
    print(f"\n{args.role} at T={args.temperature} on {len(scores)} {args.split} prompts: mean verified score of one "
          f"sample {100 * mean_sample:.1f}% ({time.perf_counter() - t0:.0f} s)\n")
    print("| K | label noise | pairs | ties | chosen side (verified %) | rejected side (verified %) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['k']} | {r['noise']:.1f} | {r['pairs']} | {r['ties']} | {100 * r['chosen']:.1f} | "
              f"{100 * r['rejected']:.1f} |")
    out = {"role": args.role, "temperature": args.temperature, "mean_sample": mean_sample, "rows": rows}
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()

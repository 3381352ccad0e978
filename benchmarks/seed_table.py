"""The methods × seeds table of the embedded benchmark: runs the missing cells through `bench run`, then prints the
mean verified score of each method with a 95% two-level bootstrap interval (seeds × test prompts,
leaderboard/stats.py), the paired difference to SFT and to DPO, and diagnostics that explain the ranking.

    python benchmarks/seed_table.py [--methods sft,dpo,vanilla_kd,dckd,adpa,adpa_plus,tvkd] [--seeds 0,1,2]
                                    [--preset embedded] [--runs runs/seed-table] [--set key=value ...]
                                    [--threads N] [--no-run] [--json table.json]

Every cell is `python cli.py run --method M --seed S --preset P --runs DIR [--set ...]` in a subprocess (a finished
run directory is reused), so the table is reproducible from the CLI alone. Diagnostics per method (mean over seeds):
  reward acc / margin  the student's validation reward accuracy (mean log-prob of chosen > rejected) and mean margin;
  KL to π_dpo          token mean of the (k+1)-bin forward KL(π_dpo || π_θ) on π_dpo's own greedy test responses
                       (teacher-forced; the teacher's top-k is cached like every other signal);
  near-miss errors     share of test responses that are one of the near misses the preference data models.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

METHODS = ("sft", "dpo", "vanilla_kd", "dckd", "adpa", "adpa_plus", "tvkd")  # dckd before adpa_plus (its init)


def cell_config(method: str, seed: int, args, overrides: dict):
    from bench.config import RunConfig

    return RunConfig(method=method, seed=seed, preset=args.preset, stage_overrides=overrides, runs_dir=args.runs)


def run_cell(method: str, seed: int, args) -> float:
    cmd = [sys.executable, str(REPO / "cli.py"), "run", "--method", method, "--seed", str(seed), "--preset",
           args.preset, "--runs", args.runs] + [x for s in args.sets for x in ("--set", s)]
    env = {**os.environ, "BENCH_PROGRESS": os.environ.get("BENCH_PROGRESS", "0")}
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
        raise SystemExit(f"cell {method} seed {seed} failed (exit {proc.returncode}): {' '.join(cmd)}")
    return time.perf_counter() - t0


def prompt_scores(run) -> tuple[list[str], np.ndarray, float]:
    from bench.suite import error_kind, score_response

    gens = run.generations()
    scores = np.array([score_response(g["meta"], g["response"]) for g in gens])
    near = float(np.mean([error_kind(g["meta"], g["response"]) is not None for g in gens]))
    return [g["id"] for g in gens], scores, near


def teacher_kl(pipe, checkpoint: Path) -> float:
    """Token mean of KL_{k+1}(π_dpo || π_θ) on π_dpo's greedy test responses (see module docstring)."""
    import torch

    from bench.forward import pad_batch, packed_forward
    from bench.models import load_model
    from bench.tensors import sparse_kl

    pairs = pipe.side_pairs("test", "gen:dpo_teacher", {})
    entry = pipe.signal_entry("dpo_teacher", "gen:dpo_teacher", "test", {})
    model = load_model(checkpoint).eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for s in range(0, len(pairs), pipe.infer_bs):
            idx = list(range(s, min(s + pipe.infer_bs, len(pairs))))
            packed = packed_forward(model, pad_batch([pairs[i] for i in idx], pipe.tok.pad_token_id))
            sig = entry.gather("topk", idx)
            kl = sparse_kl(packed.logits.float(), sig["topk_ids"].long(), sig["topk_logps"].float(), sig["tail"].float())
            total, count = total + float(kl.sum()), count + kl.numel()
    return total / max(count, 1)


def diagnostics(run, pipe) -> dict:
    path = run.path / "table_diagnostics.json"
    if path.exists():
        return json.loads(path.read_text())
    ra = run.metrics.get("reward_accuracy", {})
    out = {"reward_accuracy": ra.get("score"), "margin": ra.get("margin"),
           "kl_to_dpo_teacher": teacher_kl(pipe, run.checkpoint_path),
           "train_seconds": run.metrics.get("train", {}).get("seconds")}
    path.write_text(json.dumps(out))
    return out


def main(argv=None) -> dict:
    from bench.config import split_sets
    from bench.pipeline import Pipeline
    from bench.rundir import RunDir
    from bench.run import run_name
    from leaderboard.stats import paired_difference, seed_prompt_interval

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--preset", default="embedded")
    ap.add_argument("--runs", default="runs/seed-table")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                    help="run-preset overrides shared by every cell (method settings are not allowed here)")
    ap.add_argument("--threads", type=int, default=0, help="OMP_NUM_THREADS of each cell (default: inherited)")
    ap.add_argument("--no-run", action="store_true", help="only tabulate the cells that exist")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    methods = [m for m in args.methods.split(",") if m]
    seeds = [int(s) for s in args.seeds.split(",") if s != ""]
    _, overrides = split_sets(args.sets, set())

    t_table = time.perf_counter()
    cell_s: dict[tuple[str, int], float] = {}
    runs: dict[tuple[str, int], RunDir] = {}
    for m in methods:
        for s in seeds:
            path = Path(args.runs) / run_name(cell_config(m, s, args, overrides))
            done = (path / "metrics.json").exists() and (path / "generations.jsonl").exists()
            if not done and not args.no_run:
                cell_s[(m, s)] = run_cell(m, s, args)
                print(f"cell {m} seed {s}: {cell_s[(m, s)]:.0f} s", flush=True)
                done = True
            if done:
                runs[(m, s)] = RunDir(path)

    pipe = Pipeline(cell_config(methods[0], seeds[0], args, overrides))
    t_diag = time.perf_counter()
    rows, ids_ref = {}, None
    for m in methods:
        got = [s for s in seeds if (m, s) in runs]
        if not got:
            continue
        mats, nears, diags = [], [], []
        for s in got:
            ids, scores, near = prompt_scores(runs[(m, s)])
            if ids_ref is None:
                ids_ref = ids
            if ids != ids_ref:
                raise SystemExit(f"{m} seed {s}: its test prompts differ from the other cells'; same data_seed?")
            mats.append(scores)
            nears.append(near)
            diags.append(diagnostics(runs[(m, s)], pipe))
        per_family = {}
        for g_i, g in enumerate(runs[(m, got[0])].generations()):
            per_family.setdefault(g["meta"]["family"], []).append(g_i)
        x = np.stack(mats)
        rows[m] = {"seeds": got, "x": x, "interval": seed_prompt_interval(x), "near_miss": float(np.mean(nears)),
                   "per_seed": [float(v) for v in x.mean(1)],
                   "per_family": {f: float(x[:, ix].mean()) for f, ix in sorted(per_family.items())},
                   **{k: float(np.mean([d[k] for d in diags if d[k] is not None] or [np.nan]))
                      for k in ("reward_accuracy", "margin", "kl_to_dpo_teacher", "train_seconds")}}
    diag_s = time.perf_counter() - t_diag
    for m, r in rows.items():
        for ref in ("sft", "dpo"):
            if ref in rows and ref != m and rows[ref]["x"].shape == r["x"].shape:
                r[f"vs_{ref}"] = paired_difference(r["x"], rows[ref]["x"])
    print_table(rows, seeds, ids_ref, pipe, cell_s, diag_s, time.perf_counter() - t_table, args)
    if args.json:
        Path(args.json).write_text(json.dumps({m: {k: (v.to_dict() if hasattr(v, "to_dict") else v)
                                                   for k, v in r.items() if k != "x"} for m, r in rows.items()},
                                              indent=1))
    return rows


def print_table(rows, seeds, ids, pipe, cell_s, diag_s, wall, args) -> None:
    from bench.registry import get_method

    n = len(ids or [])
    print(f"\n{len(rows)} methods × seeds {','.join(map(str, seeds))}, preset {args.preset}, {n} test prompts "
          f"(suite {pipe.bundle.version}, data_seed {pipe.data_seed}); 95% CI: two-level bootstrap over seeds and "
          "prompts (10,000 replicates); Δ: paired bootstrap difference\n")
    print("| method | verified % [95% CI] | Δ vs SFT | Δ vs DPO | per seed | reward acc % | margin | KL to π_dpo "
          "| near-miss errors % | train s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for m, r in rows.items():
        d = lambda k: r[k].fmt() if k in r else "—"  # noqa: E731
        print(f"| {get_method(m).display_name} | {r['interval'].fmt()} | {d('vs_sft')} | {d('vs_dpo')} | "
              f"{' / '.join(f'{100 * v:.1f}' for v in r['per_seed'])} | {100 * r['reward_accuracy']:.1f} | "
              f"{r['margin']:.3f} | {r['kl_to_dpo_teacher']:.3f} | {100 * r['near_miss']:.1f} | "
              f"{r['train_seconds']:.0f} |")
    fams = sorted({f for r in rows.values() for f in r["per_family"]})
    print("\nPer family (verified %, mean over seeds)\n")
    print("| method | " + " | ".join(fams) + " |")
    print("|---" * (len(fams) + 1) + "|")
    for m, r in rows.items():
        print(f"| {get_method(m).display_name} | " + " | ".join(f"{100 * r['per_family'][f]:.1f}" for f in fams) + " |")
    ran = sum(cell_s.values())
    print(f"\nCells run by this call: {len(cell_s)} in {ran:.0f} s; diagnostics {diag_s:.0f} s; "
          f"whole call {wall:.0f} s (OMP_NUM_THREADS={args.threads or os.environ.get('OMP_NUM_THREADS', 'unset')}).")


if __name__ == "__main__":
    main()

"""Wall time of each pipeline stage for the embedded default, first run (fresh cache) by default.

    python benchmarks/stage_times.py [--method dpo] [--warm]

Prints one line per stage and the total, plus the share of the total, in one run.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--method", default="dpo")
    ap.add_argument("--preset", default="embedded")
    ap.add_argument("--warm", action="store_true", help="reuse $BENCH_CACHE instead of a fresh cache")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="bench-stages-")
    if not args.warm:
        os.environ["BENCH_CACHE"] = os.path.join(tmp, "cache")
    from bench.config import RunConfig
    from bench.runs.run import run_pipeline

    t0 = time.perf_counter()
    run = run_pipeline(RunConfig(method=args.method, preset=args.preset, runs_dir=os.path.join(tmp, "runs")))
    total = time.perf_counter() - t0
    timings = run.manifest["timings"]
    other = total - sum(timings.values())
    print(f"{'stage':<40}{'seconds':>10}{'share':>8}")
    for name, sec in list(timings.items()) + [("other (model conversion, loading, eval)", other)]:
        print(f"{name:<40}{sec:>10.1f}{sec / total:>8.1%}")
    print(f"{'total':<40}{total:>10.1f}")
    print("metrics:", {k: round(v["score"], 3) for k, v in run.metrics.items() if isinstance(v, dict) and "score" in v})


if __name__ == "__main__":
    main()

"""Cost columns of `bench leaderboard --cost` (leaderboard/aggregate.py run_costs): teacher stages, teacher passes
(a signal made from two teachers counts), samples drawn for a method (PAD's K per prompt), cache bytes per token."""
from __future__ import annotations

from collections import Counter

import pytest

from leaderboard.aggregate import run_costs


def stage(path, kind, direct=False, **cost):
    return {"path": path, "kind": kind, "direct": direct, "cost": cost}


def test_cost_columns_count_teacher_stages_passes_and_samples():
    stages = [
        stage("stages/ref_teacher/a", "ref_teacher", seconds=10.0),
        stage("stages/dpo_teacher/b", "dpo_teacher", seconds=20.0),
        stage("stages/rdpo_teacher/c", "rdpo_teacher", seconds=20.0),
        stage("stages/signals/d", "signals", True, role="dpo_teacher+rdpo_teacher", forward_passes=4, tokens=3000,
              bytes=6000, rows=30, seconds=5.0),
        stage("stages/signals/e", "signals", True, role="sft_student", forward_passes=2, tokens=1000, bytes=400,
              rows=20, seconds=1.0),
        stage("stages/samples/f", "samples", role="sft_student", sequences=256, seconds=30.0),
    ]
    row = {"cost": {"stages": stages, "train_seconds": 12.0, "wall_seconds": 40.0}}
    c = run_costs(row, Counter({s["path"]: 2 for s in stages}))
    assert c["teacher_stages"] == 3
    assert c["teacher_passes"] == 4 and c["teacher_tokens"] == pytest.approx(3.0)
    assert c["samples"] == 256
    assert c["cache_bytes_per_token"] == pytest.approx(6400 / 50)
    assert c["total_s"] == pytest.approx(40.0 + (10 + 20 + 20 + 5 + 1 + 30) / 2)
    no_samples = run_costs({"cost": {"stages": stages[:2]}}, Counter())
    assert no_samples["samples"] is None and no_samples["teacher_stages"] == 2

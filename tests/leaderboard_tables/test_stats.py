"""leaderboard/stats.py against hand computations: the two-way bootstrap against its exact distribution on a small
matrix, the t interval against its formula, and the paired test on a real and on a null difference."""
from __future__ import annotations

import itertools
import math
from collections import Counter

import numpy as np
import pytest
from scipy.stats import t as student_t

from leaderboard import stats


def _exact_two_way(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every (seed resample, item resample) pair with its probability: the exact bootstrap distribution."""
    s, p = x.shape
    values, probs = [], []
    seed_draws = Counter(tuple(sorted(d)) for d in itertools.product(range(s), repeat=s))
    item_draws = Counter(tuple(sorted(d)) for d in itertools.product(range(p), repeat=p))
    for sd, ns in seed_draws.items():
        for it, ni in item_draws.items():
            values.append(np.mean([[x[i, j] for j in it] for i in sd]))
            probs.append(ns / s ** s * ni / p ** p)
    order = np.argsort(values)
    return np.asarray(values)[order], np.asarray(probs)[order]


def _exact_quantile(values, probs, q):
    return values[np.searchsorted(np.cumsum(probs), q)]


def test_two_way_bootstrap_matches_its_exact_distribution():
    x = np.array([[1.0, 0.0, 0.5], [0.0, 0.0, 1.0], [1.0, 1.0, 0.0]])
    rows = [{f"p{j}": x[i, j] for j in range(3)} for i in range(3)]
    iv = stats.bootstrap_ci(rows, n_boot=200_000)
    assert iv.mean == pytest.approx(x.mean(), abs=1e-12) and iv.n_seeds == 3
    values, probs = _exact_two_way(x)
    assert iv.low == pytest.approx(_exact_quantile(values, probs, 0.025), abs=0.03)
    assert iv.high == pytest.approx(_exact_quantile(values, probs, 0.975), abs=0.03)
    # the exact bootstrap variance of the grand mean, against the replicates' spread
    exact_sd = math.sqrt(float(np.sum(probs * (values - np.sum(probs * values)) ** 2)))
    reps = stats._replicates(x, np.random.default_rng(1), 200_000)
    assert reps.std() == pytest.approx(exact_sd, rel=0.02)


def test_bootstrap_uses_only_items_every_seed_has_and_is_reproducible():
    rows = [{"a": 1.0, "b": 0.0, "c": 1.0}, {"a": 1.0, "b": 1.0}]
    iv = stats.bootstrap_ci(rows)
    assert iv.mean == pytest.approx((1 + 0 + 1 + 1) / 4)  # item "c" is not shared: left out
    assert stats.bootstrap_ci(rows) == iv  # fixed RNG seed: the same table every time
    with pytest.raises(ValueError):
        stats.bootstrap_ci([{"a": 1.0}, {"b": 1.0}])


def test_t_interval_follows_its_formula():
    v = [0.52, 0.61, 0.57]
    iv = stats.t_interval(v)
    mean = sum(v) / 3
    sd = math.sqrt(sum((x - mean) ** 2 for x in v) / 2)
    half = student_t.ppf(0.975, 2) * sd / math.sqrt(3)
    assert (iv.mean, iv.low, iv.high) == pytest.approx((mean, mean - half, mean + half), abs=1e-12)
    one = stats.t_interval([0.4])
    assert one.low is None and one.half_width is None and one.method == "none (1 seed)"


def test_paired_bootstrap_finds_a_real_difference_and_not_a_null_one():
    rng = np.random.default_rng(0)
    base = [{f"p{j}": float(rng.random() < 0.3) for j in range(200)} for _ in range(3)]
    better = [{k: float(v or rng.random() < 0.4) for k, v in r.items()} for r in base]  # strictly more right
    t = stats.paired_bootstrap(better, base)
    assert t.diff > 0 and t.significant and t.p_value < 0.01
    null = stats.paired_bootstrap(base, [dict(r) for r in base[::-1]])
    assert not null.significant and null.p_value > 0.05 and null.low <= 0 <= null.high

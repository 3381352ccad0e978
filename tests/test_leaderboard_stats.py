"""leaderboard/stats.py: the two-level (seeds × prompts) bootstrap against hand computations."""
from __future__ import annotations

import numpy as np
import pytest

from leaderboard.stats import (bootstrap_variance, paired_difference, replicate_means, seed_prompt_interval)

# 3 seeds × 4 prompts, small integers so the decomposition below is easy to check by hand.
X = np.array([[1.0, 0.0, 1.0, 0.0],
              [1.0, 1.0, 1.0, 0.0],
              [0.0, 0.0, 1.0, 0.0]])


def test_variance_formula_by_hand():
    # μ = 1/2; seed effects a = (0, 1/4, -1/4) -> σ_a² = 1/24; prompt effects b = (1/6, -1/6, 1/2, -1/2) -> σ_b² = 5/36;
    # residuals e = [[1/3, -1/3, 0, 0], [1/12, 5/12, -1/4, -1/4], [-5/12, -1/12, 1/4, 1/4]] -> Σe² = 5/6, σ_e² = 5/72.
    # Var = (1/24)/3 + (5/36)/4 + (5/72)/12 = 47/864.
    assert bootstrap_variance(X) == pytest.approx(47 / 864, rel=1e-12)


def test_resampling_matches_the_exact_variance():
    reps = replicate_means(X, n_boot=200_000, seed=1)
    assert reps.mean() == pytest.approx(X.mean(), abs=2e-3)
    assert reps.var() == pytest.approx(bootstrap_variance(X), rel=0.02)


def test_one_seed_is_the_ordinary_bootstrap():
    x = np.array([0.0, 1.0, 1.0, 1.0, 0.0])
    reps = replicate_means(x, n_boot=200_000, seed=2)
    assert reps.var() == pytest.approx(x.var() / len(x), rel=0.02)  # σ²/P with the population σ²
    assert bootstrap_variance(x) == pytest.approx(x.var() / len(x))


def test_interval_of_a_constant_and_of_two_prompts():
    c = seed_prompt_interval(np.full((3, 10), 0.4))
    assert (c.mean, c.lo, c.hi, c.se) == pytest.approx((0.4, 0.4, 0.4, 0.0))
    # one seed, prompts [0, 1]: replicate means 0, 1/2, 1 with probabilities 1/4, 1/2, 1/4
    two = seed_prompt_interval([[0.0, 1.0]], level=0.95, n_boot=40_000)
    assert (two.lo, two.hi) == (0.0, 1.0)
    mid = seed_prompt_interval([[0.0, 1.0]], level=0.4, n_boot=40_000)  # 30th..70th percentile: all mass at 1/2
    assert (mid.lo, mid.hi) == (0.5, 0.5)
    assert two.n_seeds == 1 and two.n_prompts == 2 and two.fmt() == "50.0 [0.0, 100.0]"


def test_paired_difference_cancels_shared_prompt_difficulty():
    rng = np.random.default_rng(0)
    difficulty = rng.random(200) < 0.5                       # half the prompts are solved by everyone
    base = np.tile(difficulty, (3, 1)).astype(float)
    better = base.copy()
    better[:, ~difficulty] = rng.random((3, (~difficulty).sum())) < 0.2  # +~10 points on the others
    d = paired_difference(better, base)
    assert d.mean == pytest.approx(better.mean() - base.mean())
    assert d.lo > 0  # clearly positive ...
    ia, ib = seed_prompt_interval(better), seed_prompt_interval(base)
    assert d.hi - d.lo < (ia.hi - ia.lo)  # ... and tighter than a marginal interval
    with pytest.raises(ValueError, match="same shape"):
        paired_difference(better[:2], base)


def test_bad_inputs():
    with pytest.raises(ValueError):
        seed_prompt_interval(np.zeros((0, 3)))
    with pytest.raises(ValueError):
        seed_prompt_interval([[0.0, np.nan]])
    with pytest.raises(ValueError):
        seed_prompt_interval([[0.0, 1.0]], level=1.5)
    assert seed_prompt_interval(X, seed=3) == seed_prompt_interval(X, seed=3)  # deterministic

"""Confidence intervals and paired tests for the leaderboard (numpy; scipy for the t quantile).

The default interval for a metric with per-item scores (the verified score per test prompt, reward accuracy per
validation pair) is a **two-way bootstrap over seeds and items**: each replicate resamples the seeds with
replacement and, independently, the items with replacement (the same items for every seed, since every seed is
scored on the same test prompts), and takes the grand mean. It reflects both sources of noise a reader cares
about: which seeds were trained and which prompts were drawn. The interval is the percentile interval of
`n_boot` replicates (default 10,000, fixed RNG seed: the table is reproducible).

Metrics with one number per run (a judge score, an OLL average) get a Student-t interval across seeds (n ≥ 2).

`paired_bootstrap` compares a method with a baseline on the same items: per replicate the items are resampled once
(shared by both) and each method's seeds independently; the statistic is the difference of grand means. The
two-sided p-value is 2·min(P(Δ* ≤ 0), P(Δ* ≥ 0)) (clipped to 1), and a difference is called significant when the
95% interval of Δ excludes 0.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

N_BOOT = 10_000
LEVEL = 0.95


@dataclass(frozen=True)
class Interval:
    mean: float
    low: float | None
    high: float | None
    n_seeds: int
    method: str  # "bootstrap seeds×items", "t over seeds", or "none (1 seed)"

    @property
    def half_width(self) -> float | None:
        if self.low is None or self.high is None:
            return None
        return (self.high - self.low) / 2


def _matrix(rows: list[dict[str, float]]) -> tuple[np.ndarray, list[str]]:
    """[seeds, items] from per-seed {item id: score}, on the items every seed has (sorted ids)."""
    common = sorted(set.intersection(*(set(r) for r in rows))) if rows else []
    return np.array([[r[i] for i in common] for r in rows], dtype=np.float64), common


def _replicates(x: np.ndarray, rng: np.random.Generator, n_boot: int, item_weights: np.ndarray | None = None):
    """Bootstrap grand means of x [S, P]: seeds and items resampled independently (multinomial counts)."""
    s, p = x.shape
    w_seed = rng.multinomial(s, np.full(s, 1 / s), size=n_boot)  # [B, S]
    w_item = item_weights if item_weights is not None else rng.multinomial(p, np.full(p, 1 / p), size=n_boot)
    return np.einsum("bs,sp,bp->b", w_seed, x, w_item) / (s * p)


def bootstrap_ci(per_seed_items: list[dict[str, float]], n_boot: int = N_BOOT, level: float = LEVEL,
                 seed: int = 0) -> Interval:
    """Mean over seeds and items with a two-way (seeds × items) percentile bootstrap interval."""
    x, _ = _matrix(per_seed_items)
    if x.size == 0:
        raise ValueError("no items shared by all seeds")
    reps = _replicates(x, np.random.default_rng(seed), n_boot)
    a = (1 - level) / 2
    lo, hi = np.quantile(reps, [a, 1 - a])
    return Interval(float(x.mean()), float(lo), float(hi), x.shape[0], "bootstrap seeds×items")


def t_interval(values: list[float], level: float = LEVEL) -> Interval:
    """Mean across seeds with a Student-t interval (none with one seed)."""
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=np.float64)
    if v.size == 0:
        raise ValueError("no values")
    if v.size == 1:
        return Interval(float(v[0]), None, None, 1, "none (1 seed)")
    from scipy.stats import t

    half = float(t.ppf(1 - (1 - level) / 2, v.size - 1) * v.std(ddof=1) / math.sqrt(v.size))
    return Interval(float(v.mean()), float(v.mean() - half), float(v.mean() + half), int(v.size), "t over seeds")


@dataclass(frozen=True)
class Paired:
    diff: float
    low: float
    high: float
    p_value: float

    @property
    def significant(self) -> bool:
        return self.low > 0 or self.high < 0


def paired_bootstrap(a: list[dict[str, float]], b: list[dict[str, float]], n_boot: int = N_BOOT,
                     level: float = LEVEL, seed: int = 0) -> Paired:
    """Difference of grand means a − b on the items both have, items resampled jointly, seeds independently."""
    common = sorted(set.intersection(*(set(r) for r in a + b)))
    if not common:
        raise ValueError("the two groups share no items")
    xa = np.array([[r[i] for i in common] for r in a], dtype=np.float64)
    xb = np.array([[r[i] for i in common] for r in b], dtype=np.float64)
    rng = np.random.default_rng(seed)
    p = len(common)
    items = rng.multinomial(p, np.full(p, 1 / p), size=n_boot)
    reps = _replicates(xa, rng, n_boot, items) - _replicates(xb, rng, n_boot, items)
    lo, hi = np.quantile(reps, [(1 - level) / 2, 1 - (1 - level) / 2])
    p_value = min(1.0, 2 * min(float((reps <= 0).mean()), float((reps >= 0).mean())))
    return Paired(float(xa.mean() - xb.mean()), float(lo), float(hi), p_value)

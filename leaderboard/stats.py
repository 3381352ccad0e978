"""Confidence intervals for a method's score over seeds and test prompts (two-level bootstrap).

A method run with S seeds on the same P test prompts gives a score matrix ``x[s, p]`` (the checker score of seed
s's response to prompt p). Its mean has two sources of noise: which seeds were drawn (training randomness) and
which prompts were drawn (the test set is a sample of the task distribution). The two-level bootstrap resamples
both: each replicate draws S seeds and P prompts with replacement, independently, and averages ``x`` over the
S × P resampled cells. The prompts drawn are the same for every seed of a replicate, because every seed answered the
same prompts (a crossed design; resampling prompts per seed would treat them as independent and understate the
prompt noise). The 95% interval is the 2.5th and 97.5th percentile of the replicate means (percentile bootstrap).

The replicate mean's variance is exactly (two-way decomposition x = μ + a_s + b_p + e_sp, each effect summing to 0)

    Var = σ_a² / S + σ_b² / P + σ_e² / (S·P),   σ_a² = mean_s a_s²,  σ_b² = mean_p b_p²,  σ_e² = mean_sp e_sp²,

which ``bootstrap_variance`` computes and the tests check the resampling against. With few seeds (3) the seed term is
estimated from 3 values and, as for any bootstrap, shrunk by (S−1)/S: read the interval as "this benchmark's noise
given these seeds", not as a population statement.

``paired_difference`` applies the same resampled seeds and prompts to two methods (seed i of one with seed i of the
other: the same data order and SFT student), which cancels the prompt difficulty both share; it is the right
interval for "does A beat B", and is narrower than comparing two marginal intervals for overlap.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

DEFAULT_BOOT = 10_000


@dataclass(frozen=True)
class Interval:
    """Mean and percentile-bootstrap interval of a score, with the bootstrap standard error."""

    mean: float
    lo: float
    hi: float
    se: float
    level: float
    n_seeds: int
    n_prompts: int

    def to_dict(self) -> dict:
        return asdict(self)

    def overlaps(self, other: "Interval") -> bool:
        return not (self.hi < other.lo or other.hi < self.lo)

    def fmt(self, scale: float = 100.0, digits: int = 1) -> str:
        return f"{scale * self.mean:.{digits}f} [{scale * self.lo:.{digits}f}, {scale * self.hi:.{digits}f}]"


def _matrix(scores) -> np.ndarray:
    x = np.asarray(scores, dtype=np.float64)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(f"scores must be a non-empty [seeds, prompts] matrix, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("scores must be finite")
    return x


def replicate_means(scores, n_boot: int = DEFAULT_BOOT, seed: int = 0, _idx=None) -> np.ndarray:
    """Means of ``n_boot`` two-level bootstrap replicates of a [seeds, prompts] matrix."""
    x = _matrix(scores)
    s_idx, p_idx = _idx if _idx is not None else _indices(x.shape, n_boot, seed)
    per_prompt = x[s_idx].mean(axis=1)  # [B, P]: mean over the replicate's seeds, for every prompt
    return np.take_along_axis(per_prompt, p_idx, axis=1).mean(axis=1)


def _indices(shape: tuple[int, int], n_boot: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    if n_boot < 1:
        raise ValueError("n_boot must be >= 1")
    rng = np.random.default_rng(seed)
    S, P = shape
    return rng.integers(0, S, size=(n_boot, S)), rng.integers(0, P, size=(n_boot, P))


def _interval(x: np.ndarray, reps: np.ndarray, level: float) -> Interval:
    if not 0 < level < 1:
        raise ValueError("level must be in (0, 1)")
    alpha = (1 - level) / 2
    lo, hi = np.quantile(reps, [alpha, 1 - alpha])
    return Interval(float(x.mean()), float(lo), float(hi), float(reps.std(ddof=1)) if len(reps) > 1 else 0.0,
                    level, x.shape[0], x.shape[1])


def seed_prompt_interval(scores, level: float = 0.95, n_boot: int = DEFAULT_BOOT, seed: int = 0) -> Interval:
    """Mean of a [seeds, prompts] score matrix with its two-level percentile-bootstrap interval."""
    x = _matrix(scores)
    return _interval(x, replicate_means(x, n_boot, seed), level)


def paired_difference(a, b, level: float = 0.95, n_boot: int = DEFAULT_BOOT, seed: int = 0) -> Interval:
    """Interval of mean(a) − mean(b) for two [seeds, prompts] matrices of the same shape (seed i paired with seed i,
    prompt p with prompt p), resampling the same seeds and prompts for both."""
    xa, xb = _matrix(a), _matrix(b)
    if xa.shape != xb.shape:
        raise ValueError(f"paired matrices need the same shape, got {xa.shape} and {xb.shape}")
    return seed_prompt_interval(xa - xb, level, n_boot, seed)


def bootstrap_variance(scores) -> float:
    """The exact variance of the two-level bootstrap replicate mean (formula in the module docstring)."""
    x = _matrix(scores)
    S, P = x.shape
    mu = x.mean()
    a = x.mean(axis=1) - mu
    b = x.mean(axis=0) - mu
    e = x - mu - a[:, None] - b[None, :]
    return float((a ** 2).mean() / S + (b ** 2).mean() / P + (e ** 2).mean() / (S * P))

"""benchmarks/pair_quality.py's arithmetic by hand: pairs from the first K samples, ties dropped, label noise in
expectation."""
from __future__ import annotations

import pytest

from benchmarks.pair_quality import quality


def test_quality_from_the_first_k_samples_with_noise():
    scores = [[1.0, 0.0, 0.5], [0.2, 0.2, 1.0], [0.0, 0.0, 0.0]]
    k2 = quality(scores, 2, 0.0)
    assert (k2["pairs"], k2["ties"], k2["chosen"], k2["rejected"]) == (1, 2, 1.0, 0.0)
    k3 = quality(scores, 3, 0.25)
    assert (k3["pairs"], k3["ties"]) == (2, 1)
    assert k3["chosen"] == pytest.approx(((0.75 * 1.0 + 0.25 * 0.0) + (0.75 * 1.0 + 0.25 * 0.2)) / 2)
    assert k3["rejected"] == pytest.approx(((0.75 * 0.0 + 0.25 * 1.0) + (0.75 * 0.2 + 0.25 * 1.0)) / 2)


def test_headroom_reads_both_sides_of_the_pairs_and_the_invariant():
    """Suite 2.x's chosen side is gold (checker 1.0 on every pair): no teacher can clear it, as the issue measured."""
    from bench.data.suite import build_suite
    from benchmarks.headroom import invariant, pair_sides

    rows = build_suite(0, sizes={"sft": 0, "pref_train": 32, "pref_val": 0, "test": 0}).split("pref_train")
    sides = pair_sides(rows)
    assert sides["chosen"]["score"] == 1.0 and set(sides["chosen"]["per_family"].values()) == {1.0}
    assert 0.0 <= sides["rejected"]["score"] < 0.5
    assert invariant(0.80, 1.0)["met"] is False and invariant(0.80, 1.0)["margin"] == pytest.approx(-0.2)
    assert invariant(0.85, 0.75)["met"] is True
    assert invariant(0.79, 0.60)["met"] is False  # 19 points above, but under 80% absolute

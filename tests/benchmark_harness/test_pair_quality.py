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

"""The benchmarks' memory readings: resident memory now is positive and never above the process's peak."""
from __future__ import annotations

import sys

import pytest

from benchmarks.harness import current_rss_bytes, peak_rss_bytes


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/self/statm is Linux's")
def test_current_rss_is_positive_and_below_the_peak():
    block = bytearray(64 * 2**20)  # 64 MiB touched: resident now
    now = current_rss_bytes()
    # the kernel's high-water mark (ru_maxrss) is synced from per-thread counters lazily, up to a few pages behind
    assert 64 * 2**20 < now <= peak_rss_bytes() + 4 * 2**20
    del block

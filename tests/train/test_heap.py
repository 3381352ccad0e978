"""bench.train.heap: the trainer gives freed heap pages back after each optimizer step (glibc's malloc_trim)."""
from __future__ import annotations

import platform

import pytest
import torch

from bench.train.heap import release_heap


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_freed_heap_goes_back_to_the_os():
    blocks = [torch.ones(16_384) for _ in range(20_000)]  # 64 KiB each, below mmap's threshold: on the heap
    del blocks[::2]
    before = rss()
    assert release_heap() is True
    # half the 1.3 GB was freed inside the heap; a trim returns most of those pages
    assert rss() < before - 300 * 2 ** 20, (before, rss())
    del blocks

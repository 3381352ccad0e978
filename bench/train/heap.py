"""Give the C heap's freed pages back to the OS after each optimizer step (glibc's `malloc_trim`).

A CPU training step frees gigabytes of activations, logits chunks and gradients; glibc keeps most of those pages
in its heap, so the process's resident memory after a step stays ~0.7 GB above what it holds (measured on the
embedded DPO step: 3.28 GB resident for 1.61 GB of live tensors; 2.08 GB after a trim; TRL's trainer, same live
tensors, 2.65 GB). Trimming costs milliseconds against seconds per step. A no-op off glibc (macOS, musl) and for
GPU memory (the CUDA caching allocator is another matter).
"""
from __future__ import annotations

import ctypes
import ctypes.util
from functools import lru_cache


@lru_cache(maxsize=1)
def _trim():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim
    except (OSError, AttributeError):
        return None


def release_heap() -> bool:
    """Return freed heap pages to the OS; False where there is no malloc_trim."""
    trim = _trim()
    if trim is None:
        return False
    trim(0)
    return True

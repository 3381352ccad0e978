"""What a run cost: the stages it used (with what each cost when it was built), its own training, and peak memory.

Every cached entry records in its marker what building it cost (`cost`: seconds, tokens, forward passes, bytes)
and which entries it used itself (`deps`, recorded by bench.store.stages while it was built). A run records the
entries it used directly (bench.store.stages.recording_use) and stores their closure in its manifest, so the
leaderboard can show teacher passes, cache bytes and a total wall-clock in which each shared stage is amortised over
the runs that used it. Peak memory is sampled while the student trains (`psutil`, resident set size; the CUDA
allocator's peak when there is a GPU).
"""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Callable, Iterable

from bench.paths import cache_root


def closure(direct: Iterable[str | Path]) -> list[dict]:
    """Every published entry a run used, directly or through a dependency (the `deps` each entry's marker
    records): [{"path" (relative to the cache root), "kind", "direct", "cost"}], sorted by path."""
    from bench.store.stages import cache_relative

    root = cache_root()
    out: dict[str, dict] = {}
    todo = [(cache_relative(Path(p)), True) for p in direct]
    while todo:
        rel, is_direct = todo.pop()
        if rel in out:
            out[rel]["direct"] = out[rel]["direct"] or is_direct
            continue
        meta = _marker(root / rel)
        cost = dict(meta.get("cost") or {})
        if isinstance(meta.get("kinds"), dict):  # a signal entry: what it occupies in the cache
            cost["bytes"] = sum(int(k.get("bytes", 0)) for k in meta["kinds"].values())
            cost["rows"] = max((int(k.get("rows", 0)) for k in meta["kinds"].values()), default=0)
        parts = rel.split("/")
        out[rel] = {"path": rel, "kind": meta.get("kind") or (parts[1] if parts[0] == "stages" and len(parts) > 1
                                                                 else parts[0]),
                    "direct": is_direct, "cost": cost}
        todo += [(d, False) for d in meta.get("deps") or []]
    return sorted(out.values(), key=lambda r: r["path"])


def _marker(d: Path) -> dict:
    for name in ("stage.json", "manifest.json", "bench_model.json"):
        try:
            return json.loads((d / name).read_text())
        except (OSError, ValueError):
            continue
    return {}


class PeakMemory:
    """Peak resident set size (bytes) of this process while the block runs, sampled every `interval` seconds;
    `gpu` is the CUDA allocator's peak (None without CUDA)."""

    def __init__(self, interval: float = 0.05):
        self.interval, self.rss, self.gpu = interval, 0, None
        self._stop = threading.Event()

    def _sample(self) -> None:
        import psutil

        proc = psutil.Process()
        while not self._stop.is_set():
            self.rss = max(self.rss, proc.memory_info().rss)
            self._stop.wait(self.interval)

    def __enter__(self) -> "PeakMemory":
        import torch

        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        import psutil
        import torch

        self._stop.set()
        self._thread.join(timeout=5)
        self.rss = max(self.rss, psutil.Process().memory_info().rss)
        if torch.cuda.is_available():
            self.gpu = int(torch.cuda.max_memory_allocated())


def stopwatch() -> Callable[[], float]:
    t0 = time.perf_counter()
    return lambda: time.perf_counter() - t0

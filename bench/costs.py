"""What a run cost: the stages it used (with what each cost when it was built), its own training, and peak memory.

Every cached stage records in its marker what building it cost (`cost`: seconds, tokens, forward passes, bytes)
and which stages it used itself (`deps`, paths relative to the cache root). A pipeline keeps a `Ledger` of the
stages it touches; the run's manifest stores the closure (direct uses and their dependencies), so the leaderboard
can show teacher passes, cache bytes and a total wall-clock in which each shared stage is amortised over the runs
that used it. Peak memory is sampled while the student trains (`psutil`, resident set size; the CUDA allocator's
peak when there is a GPU).
"""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Callable

from bench.paths import cache_root


def _rel(path: Path) -> str:
    try:
        return Path(path).resolve().relative_to(cache_root().resolve()).as_posix()
    except ValueError:
        return str(path)


class Ledger:
    """Stages a pipeline used; while a stage is being built, the stages it uses become its dependencies."""

    def __init__(self):
        self.direct: list[str] = []
        self._frames: list[list[str]] = []

    def record(self, path: Path) -> Path:
        rel = _rel(path)
        target = self._frames[-1] if self._frames else self.direct
        if rel not in target:
            target.append(rel)
        return path

    def building(self, build: Callable[[Path], dict | None]) -> Callable[[Path], dict]:
        """Wrap a stage's build function: its marker gets `deps` (the stages used while building it)."""
        def wrapped(tmp: Path) -> dict:
            self._frames.append([])
            try:
                meta = build(tmp) or {}
            finally:
                deps = self._frames.pop()
            return {**meta, "deps": deps}
        return wrapped

    def closure(self) -> list[dict]:
        """Every stage used, directly or through a dependency: [{"path", "kind", "direct", "cost"}]."""
        root = cache_root()
        out: dict[str, dict] = {}
        todo = [(p, True) for p in self.direct]
        while todo:
            rel, direct = todo.pop()
            if rel in out:
                out[rel]["direct"] = out[rel]["direct"] or direct
                continue
            meta = _marker(root / rel)
            cost = dict(meta.get("cost") or {})
            if isinstance(meta.get("kinds"), dict):  # a signal entry: what it occupies in the cache
                cost["bytes"] = sum(int(k.get("bytes", 0)) for k in meta["kinds"].values())
                cost["rows"] = max((int(k.get("rows", 0)) for k in meta["kinds"].values()), default=0)
            out[rel] = {"path": rel, "kind": meta.get("kind") or rel.split("/")[1 if rel.startswith("stages/") else 0],
                        "direct": direct, "cost": cost}
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

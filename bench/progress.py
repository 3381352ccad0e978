"""Rich progress bars for long work (stage passes, training, generation), with tokens/s and live metrics."""
from __future__ import annotations

import os
import sys
import time
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

console = Console(stderr=True)


class _Bar:
    def __init__(self, progress: Progress | None, task):
        self.progress, self.task = progress, task
        self.tokens = 0
        self.t0 = time.perf_counter()
        self.info = ""

    def advance(self, n: int = 1, tokens: int = 0, **metrics) -> None:
        self.tokens += tokens
        dt = max(time.perf_counter() - self.t0, 1e-9)
        parts = [f"{k}={v:.4g}" for k, v in metrics.items()]
        if self.tokens:
            parts.append(f"{self.tokens / dt:,.0f} tok/s")
        self.info = " ".join(parts)
        if self.progress is not None:
            self.progress.update(self.task, advance=n, info=self.info)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / max(time.perf_counter() - self.t0, 1e-9)


def _enabled() -> bool:
    return os.environ.get("BENCH_PROGRESS", "1") != "0" and (sys.stderr.isatty() or os.environ.get("BENCH_PROGRESS") == "1")


_SHARED: list[Progress] = []  # an outer bar (a sweep's) that inner bars join instead of opening their own


def _new_progress() -> Progress:
    return Progress(
        TextColumn("[bold blue]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[unit]}"),
        TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[info]}"), console=console,
        transient=False,
    )


@contextmanager
def progress_bar(desc: str, total: int, unit: str = "it"):
    if not _enabled():
        yield _Bar(None, None)
        return
    if _SHARED:  # inside a sweep: a line under the sweep's bar, removed when done
        progress = _SHARED[-1]
        task = progress.add_task(desc, total=total, info="", unit=unit)
        try:
            yield _Bar(progress, task)
        finally:
            progress.remove_task(task)
        return
    progress = _new_progress()
    with progress:
        task = progress.add_task(desc, total=total, info="", unit=unit)
        yield _Bar(progress, task)


@contextmanager
def overall_progress(desc: str, total: int, unit: str = "it"):
    """An outer bar (cells done, ETA) that every progress_bar opened inside it joins as a line below."""
    if not _enabled():
        yield _Bar(None, None)
        return
    progress = _new_progress()
    with progress:
        task = progress.add_task(desc, total=total, info="", unit=unit)
        _SHARED.append(progress)
        try:
            yield _Bar(progress, task)
        finally:
            _SHARED.pop()

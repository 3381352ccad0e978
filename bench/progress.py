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


@contextmanager
def progress_bar(desc: str, total: int, unit: str = "it"):
    if not _enabled():
        yield _Bar(None, None)
        return
    progress = Progress(
        TextColumn("[bold blue]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn(unit),
        TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[info]}"), console=console,
        transient=False,
    )
    with progress:
        task = progress.add_task(desc, total=total, info="")
        yield _Bar(progress, task)

"""Progress of long work (stage passes, training, generation, evaluation), with tokens/s and live metrics.

- stderr is a terminal: a rich progress bar;
- stderr is not a terminal (CI logs, `nohup`, `2> file`): plain lines, one when the work starts, then one every
  `BENCH_PROGRESS_EVERY` seconds (default 30), and one when it ends, e.g.
  `[14:03:07] train dpo: 12/40 steps (30%) 2.1 s/step eta 59s loss=0.6931 1,234 tok/s`;
- `BENCH_PROGRESS=0`: nothing; `BENCH_PROGRESS=lines`: plain lines even on a terminal; `BENCH_PROGRESS=1`: the bar
  even when stderr is not a terminal.
Under `accelerate launch` only process 0 reports progress. Inside `overall_progress` (a sweep's bar: cells done,
ETA) every bar joins it as a line below instead of opening a display of its own.
"""
from __future__ import annotations

import os
import sys
import time
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

console = Console(stderr=True, soft_wrap=True)  # long lines wrap in the terminal, never mid-log


def _seconds(s: float) -> str:
    s = int(round(s))
    return f"{s}s" if s < 60 else (f"{s // 60}m{s % 60:02d}s" if s < 3600 else f"{s // 3600}h{s % 3600 // 60:02d}m")


class _Bar:
    def __init__(self, progress: Progress | None, task, desc: str = "", total: int = 0, unit: str = "it",
                 every: float | None = None):
        self.progress, self.task = progress, task
        self.desc, self.total, self.unit, self.every = desc, total, unit, every
        self.done = 0
        self.tokens = 0
        self.t0 = time.perf_counter()
        self.last_line = self.t0
        self.info = ""

    def advance(self, n: int = 1, tokens: int = 0, **metrics) -> None:
        self.done += n
        self.tokens += tokens
        dt = max(time.perf_counter() - self.t0, 1e-9)
        parts = [f"{k}={v:.4g}" for k, v in metrics.items()]
        if self.tokens:
            parts.append(f"{self.tokens / dt:,.0f} tok/s")
        self.info = " ".join(parts)
        if self.progress is not None:
            self.progress.update(self.task, advance=n, info=self.info)
        elif self.every is not None and self.done < self.total and time.perf_counter() - self.last_line >= self.every:
            self.line()

    def line(self, final: bool = False) -> None:
        """One plain progress line on stderr."""
        now = time.perf_counter()
        self.last_line = now
        elapsed = now - self.t0
        pct = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
        rate = f" {elapsed / self.done:.2g} s/{self.unit.rstrip('s') or 'it'}" if self.done else ""
        if final:
            timing = f" done in {_seconds(elapsed)}"
        else:
            left = (self.total - self.done) * elapsed / self.done if self.done and self.total else None
            timing = rate + (f" eta {_seconds(left)}" if left is not None else "")
        stamp = time.strftime("%H:%M:%S")
        print(f"[{stamp}] {self.desc}: {self.done}/{self.total} {self.unit}{pct}{timing}"
              + (f" {self.info}" if self.info else ""), file=sys.stderr, flush=True)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / max(time.perf_counter() - self.t0, 1e-9)


def _mode() -> str:
    """'bar', 'lines' or 'off' (see the module docstring)."""
    flag = os.environ.get("BENCH_PROGRESS", "").strip().lower()
    if flag == "0" or os.environ.get("RANK", "0") not in ("", "0"):
        return "off"
    if flag == "lines":
        return "lines"
    try:
        tty = sys.stderr.isatty()
    except (AttributeError, ValueError):
        tty = False
    return "bar" if tty or flag == "1" else "lines"


def _every() -> float:
    try:
        return max(float(os.environ.get("BENCH_PROGRESS_EVERY", "30")), 0.0)
    except ValueError:
        return 30.0


_SHARED: list[Progress] = []  # an outer bar (a sweep's) that inner bars join instead of opening their own


def _new_progress() -> Progress:
    return Progress(
        TextColumn("[bold blue]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[unit]}"),
        TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[info]}"), console=console,
        transient=False,
    )


@contextmanager
def progress_bar(desc: str, total: int, unit: str = "it"):
    mode = _mode()
    if mode == "off":
        yield _Bar(None, None)
        return
    if mode == "lines":
        bar = _Bar(None, None, desc, total, unit, every=_every())
        bar.line()
        yield bar
        bar.line(final=True)
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
    """An outer bar (cells done, ETA) that every progress_bar opened inside it joins as a line below; plain lines
    (or nothing) where progress_bar would print plain lines (or nothing)."""
    if _mode() != "bar":
        with progress_bar(desc, total, unit) as bar:
            yield bar
        return
    progress = _new_progress()
    with progress:
        task = progress.add_task(desc, total=total, info="", unit=unit)
        _SHARED.append(progress)
        try:
            yield _Bar(progress, task)
        finally:
            _SHARED.pop()

"""`bench leaderboard`: collect finished runs, aggregate seeds, render, export and plot."""
from __future__ import annotations

import io
from pathlib import Path

from bench.errors import BenchError

FORMATS = ("table", "md", "csv", "json", "latex", "html")


def renderers():
    from leaderboard.export import to_html, to_latex
    from leaderboard.render import to_csv, to_json, to_markdown

    return {"md": to_markdown, "csv": to_csv, "json": to_json, "latex": to_latex, "html": to_html}


def table_text(groups, cost: bool, baseline: str | None, width: int = 200) -> str:
    from rich.console import Console

    from leaderboard.render import to_rich

    buf = io.StringIO()
    Console(file=buf, width=width, color_system=None).print(to_rich(groups, cost, baseline))
    return buf.getvalue()


def tuned_rows(rows: list[dict], seed: int, warn=None) -> list[dict]:
    """Only the rows of each method's validation-selected setting (bench/runs/tuning.py): per method (on one student,
    teacher and dataset), the settings whose run at `seed` has the best validation score."""
    from bench.runs.tuning import select

    def who(r):
        return f"{r['method_name']}|{r['student']}|{r['teacher']}|{r['dataset']}"

    chosen = {c["key"] for c in select([{"method": who(r), "key": r["group"], "label": r["settings"],
                                         "seed": r["seed"], "validation": r["validation"]} for r in rows],
                                       seed).values()}
    left_out = sorted({r["method"] for r in rows} - {r["method"] for r in rows if r["group"] in chosen})
    if left_out and warn:
        warn(f"--tuned: no run at seed {seed} with a validation score for {', '.join(left_out)}; left out")
    return [r for r in rows if r["group"] in chosen]


def build_groups(runs: Path, *, baseline: str | None, filters: list[str], sort: str | None, per_run: bool,
                 tuned: int | None = None):
    import sys

    from leaderboard.aggregate import aggregate, sort_groups
    from leaderboard.collect import apply_filters, collect

    rows = apply_filters(collect(runs), filters)
    if tuned is not None:
        rows = tuned_rows(rows, tuned, warn=lambda line: print(f"warning: {line}", file=sys.stderr))
    if not rows:
        raise BenchError(f"no finished runs under {runs}" + (" match the filters" if filters else "") +
                         (f" have a validation score at seed {tuned}" if tuned is not None else "") +
                         "; train one with `bench run --method dpo`")
    if per_run:
        for r in rows:
            r["group"] = r["run"]
    return sort_groups(aggregate(rows, baseline), sort)


def write_plots(groups, plot: Path | None, radar: Path | None, sweep_plot: str | None, sweep_out: Path | None,
                sweep_metric: str | None) -> list[str]:
    from leaderboard import plots

    written = []
    if plot:
        written.append(f"plot: {plots.bars(groups, plot)}")
    if radar:
        written.append(f"radar: {plots.radar(groups, radar)}")
    if sweep_plot:
        out = sweep_out or Path(f"sweep-{sweep_plot}.png")
        written.append(f"sweep plot: {plots.sweep(groups, sweep_plot, out, sweep_metric)}")
    return written


def _console(width: int):
    from rich.console import Console

    console = Console()
    return console if console.is_terminal else Console(width=width)  # piped or logged: do not wrap at 80 columns


def show(groups, fmt: str, output: Path | None, *, cost: bool, baseline: str | None, diagnostics: bool) -> None:
    """Print the table (or, with `diagnostics`, what explains each score) in `fmt`; also write it to `output`."""
    from bench.store.files import atomic_write_text

    if diagnostics:
        from leaderboard import diagnostics as diag

        text = diag.to_markdown(groups)
        if fmt == "table":
            _console(240).print(diag.to_rich(groups))
        else:
            print(text)
    elif fmt == "table":
        from leaderboard.render import to_rich

        _console(200).print(to_rich(groups, cost, baseline))
        text = table_text(groups, cost, baseline)
    else:
        text = renderers()[fmt](groups, cost, baseline)
        print(text)
    if output:
        atomic_write_text(output, text)


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


def build_groups(runs: Path, *, baseline: str | None, filters: list[str], sort: str | None, per_run: bool):
    from leaderboard.aggregate import aggregate, sort_groups
    from leaderboard.collect import apply_filters, collect

    rows = apply_filters(collect(runs), filters)
    if not rows:
        raise BenchError(f"no finished runs under {runs}" + (" match the filters" if filters else "") +
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

"""Render aggregated leaderboard rows as a rich table, Markdown, CSV or JSON (LaTeX/HTML: leaderboard/export.py).
Every header carries its unit; CSV and JSON carry the same units as the table (JSON says which in `units`)."""
from __future__ import annotations

import csv
import io
import json

from leaderboard.cells import ID_COLUMNS, ID_HEADERS, build, caption, cost_columns, id_text, metric_columns
from leaderboard.metrics import header, units


def _columns(groups, cost: bool):
    return metric_columns(groups), (cost_columns(groups) if cost else [])


def _mark(cell, best="**{}**", second="{}", partial=" †", sig="*") -> str:
    text = cell.text
    if cell.best:
        text = best.format(text)
    elif cell.second:
        text = second.format(text)
    if cell.ci is not None:
        text += f" ± {cell.ci}"
    if cell.significant:
        text += sig
    if cell.partial:
        text += partial
    return text


def to_markdown(groups: list[dict], cost: bool = False, baseline: str | None = None) -> str:
    cols, costs = _columns(groups, cost)
    cells = build(groups, cols, costs)
    heads = [ID_HEADERS.get(c, c) for c in ID_COLUMNS] + [header(c) for c in cols + costs]
    lines = ["| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
    for g, row in zip(groups, cells):
        lines.append("| " + " | ".join([id_text(g, c) for c in ID_COLUMNS] +
                                         [_mark(row[c], second="<u>{}</u>") for c in cols + costs]) + " |")
    return "\n".join(lines) + "\n\n" + caption(groups, baseline) + "\n"


def _flat(groups: list[dict], cost: bool) -> tuple[list[str], list[dict]]:
    cols, costs = _columns(groups, cost)
    heads = ["run"] + ID_COLUMNS + ["seeds"]
    for c in cols:
        heads += [header(c), f"{header(c)} ci low", f"{header(c)} ci high", f"{c} partial"]
    heads += [header(c) for c in costs]
    out = []
    from leaderboard.metrics import BY_COL

    for g in groups:
        row = {"run": g["run"], **{c: g.get(c) for c in ID_COLUMNS}, "seeds": " ".join(map(str, g["seeds"]))}
        for c in cols:
            s = BY_COL[c].scale
            ci = g.get(f"{c}_ci")
            row[header(c)] = None if g.get(c) is None else g[c] * s
            row[f"{header(c)} ci low"] = None if ci is None else ci[0] * s
            row[f"{header(c)} ci high"] = None if ci is None else ci[1] * s
            row[f"{c} partial"] = g.get(f"{c}_partial")
        for c in costs:
            row[header(c)] = g["cost"].get(c)
        out.append(row)
    return heads, out


def to_csv(groups: list[dict], cost: bool = False, baseline: str | None = None) -> str:
    heads, rows = _flat(groups, cost)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=heads, extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def to_json(groups: list[dict], cost: bool = False, baseline: str | None = None) -> str:
    """{"units", "interval", "rows"}: each row holds per metric its value, `<col>_ci` and `<col>_partial` in the
    table's units, the seeds and run names, and (with a baseline) `<col>_vs` in the same units."""
    from leaderboard.metrics import BY_COL

    cols, costs = _columns(groups, cost)
    rows = []
    for g in groups:
        row = {k: g.get(k) for k in ("run", "runs", "method", "method_name", "settings", "student", "teacher",
                                      "dataset", "preset", "seeds", "n_seeds", "group")}
        for c in cols:
            s = BY_COL[c].scale
            ci, vs = g.get(f"{c}_ci"), g.get(f"{c}_vs")
            row[c] = None if g.get(c) is None else g[c] * s
            row[f"{c}_ci"] = None if ci is None else [ci[0] * s, ci[1] * s]
            row[f"{c}_partial"] = g.get(f"{c}_partial")
            if vs:
                row[f"{c}_vs"] = {**vs, "diff": vs["diff"] * s, "low": vs["low"] * s, "high": vs["high"] * s}
        if cost:
            row["cost"] = {c: g["cost"].get(c) for c in costs}
        rows.append(row)
    u = units()
    return json.dumps({"units": {c: u[c] for c in cols + costs}, "interval": caption(groups, baseline),
                       "rows": rows}, indent=2)


def to_rich(groups: list[dict], cost: bool = False, baseline: str | None = None):
    """A terminal table: identity columns that are the same for every row move into the title, so the table
    stays readable on a narrow terminal."""
    from rich.table import Table

    cols, costs = _columns(groups, cost)
    cells = build(groups, cols, costs)
    varying = [c for c in ID_COLUMNS if c in ("method", "settings", "n_seeds")
               or len({id_text(g, c) for g in groups}) > 1]
    fixed = [f"{c} {id_text(groups[0], c)}" for c in ID_COLUMNS if c not in varying]
    title = "prefdistill-bench leaderboard" + (f" ({', '.join(fixed)})" if fixed else "")
    table = Table(title=title, caption=caption(groups, baseline), caption_justify="left")
    for c in varying:
        table.add_column(ID_HEADERS.get(c, c), style="bold" if c == "method" else None, overflow="fold")
    for c in cols + costs:
        table.add_column(header(c), justify="right", overflow="fold")
    for g, row in zip(groups, cells):
        table.add_row(*[id_text(g, c) for c in varying],
                      *[_mark(row[c], best="[bold]{}[/bold]", second="[underline]{}[/underline]")
                        for c in cols + costs])
    return table

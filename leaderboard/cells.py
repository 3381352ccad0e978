"""What every renderer shows in a cell: the value in its display unit, the interval's half-width, and the marks
(best, second best, partial evaluation, significant difference from the baseline)."""
from __future__ import annotations

import math
from dataclasses import dataclass

from leaderboard.metrics import BY_COL, COST_HIGHER, COSTS, METRICS

ID_COLUMNS = ["method", "settings", "student", "teacher", "dataset", "n_seeds"]
ID_HEADERS = {"n_seeds": "seeds"}


@dataclass
class Cell:
    text: str          # value at display precision ("–" when missing)
    ci: str | None     # half-width of the 95% interval, same precision
    best: bool = False
    second: bool = False
    partial: bool = False
    significant: bool = False
    value: float | None = None


def metric_columns(groups: list[dict]) -> list[str]:
    """Metric columns at least one group has."""
    return [m.col for m in METRICS if any(g.get(m.col) is not None for g in groups)]


def cost_columns(groups: list[dict]) -> list[str]:
    return [k for k in COSTS if any(g["cost"].get(k) is not None for g in groups)]


def _fmt(value: float | None, digits: int, kind: str = "f") -> str:
    return "–" if value is None else f"{value:.{digits}{kind}}"


def column_decimals(groups: list[dict], col: str) -> int:
    """One precision for a whole column: a metric's fixed decimals ("f"), or for significant-digit metrics ("g")
    the decimals that give the column's largest value its significant digits, more where the smallest value would
    otherwise show fewer than two (at most 6). Values and ± half-widths share it."""
    m = BY_COL[col]
    if m.fmt != "g":
        return m.digits
    values = [abs(g[col] * m.scale) for g in groups if g.get(col) is not None and g[col] != 0]
    if not values:
        return m.digits
    decimals = m.digits - 1 - math.floor(math.log10(max(values)))
    decimals = max(decimals, 1 - math.floor(math.log10(min(values))))
    return min(max(decimals, 0), 6)


def metric_cell(g: dict, col: str, decimals: int | None = None) -> Cell:
    m = BY_COL[col]
    value = g.get(col)
    shown = None if value is None else value * m.scale
    ci = g.get(f"{col}_ci")
    half = None if ci is None else (ci[1] - ci[0]) / 2 * m.scale
    vs = g.get(f"{col}_vs") or {}
    digits, kind = (m.digits, m.fmt) if decimals is None else (decimals, "f")
    return Cell(_fmt(shown, digits, kind), None if half is None else _fmt(half, digits, kind),
                partial=bool(g.get(f"{col}_partial")), significant=bool(vs.get("significant")), value=shown)


def cost_cell(g: dict, col: str) -> Cell:
    value = g["cost"].get(col)
    return Cell(_fmt(value, COSTS[col][2]), None, value=value)


def build(groups: list[dict], cols: list[str], costs: list[str]) -> list[dict[str, Cell]]:
    """Cells of every group for the given metric and cost columns, with best/second marks (ties at the shown
    precision share the mark; partial evaluations are never marked; marks need at least two candidates)."""
    decimals = {c: column_decimals(groups, c) for c in cols}
    table = [{**{c: metric_cell(g, c, decimals[c]) for c in cols}, **{c: cost_cell(g, c) for c in costs}}
             for g in groups]
    for col in cols + costs:
        higher = BY_COL[col].higher if col in BY_COL else col in COST_HIGHER
        cands = [row[col] for row in table if row[col].value is not None and not row[col].partial]
        if len(cands) < 2:
            continue
        # rank by the shown text's value so that ties at the shown precision share a mark
        distinct = sorted({float(c.text) for c in cands}, reverse=higher)
        for c in cands:
            c.best = float(c.text) == distinct[0]
            c.second = len(distinct) > 1 and float(c.text) == distinct[1]
    return table


def id_text(g: dict, col: str) -> str:
    value = g.get(col)
    return "–" if value in (None, "") else str(value)


def caption(groups: list[dict], baseline: str | None) -> str:
    seeds = sorted({g["n_seeds"] for g in groups})
    methods = sorted({g.get(f"{m.col}_interval") for g in groups for m in METRICS if g.get(f"{m.col}_interval")})
    text = (f"Mean over {'/'.join(map(str, seeds))} seed(s) per row; ± is half the 95% interval "
            f"({'; '.join(methods) or 'none'}: a bootstrap resamples seeds and test items jointly, 10,000 "
            "replicates; t over seeds where a metric has no per-item scores). Bold: best, underlined: second "
            "(ties at the shown precision share it). † partial evaluation (a subset), never marked best.")
    if baseline:
        text += f" * significantly different from {baseline} (paired bootstrap over the same items, 95%)."
    return text

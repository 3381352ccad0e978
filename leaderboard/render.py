"""Render leaderboard rows as a rich table, Markdown (paper-style), CSV or JSON, and plot them."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from leaderboard.collect import metric_columns

ID_COLUMNS = ["method", "settings", "student", "teacher", "dataset", "seed"]
FRACTION = {"verified", "reward_acc"}  # stored in [0, 1], shown ×100
PERCENT = FRACTION | {"alpaca_wr", "alpaca_lc", "oll_avg"}  # shown as percent
LOWER_IS_BETTER = {"value_kl"}  # bold = the smallest; shown with 3 significant digits (KLs can be ≪ 0.01)


def as_percent(col: str, v: float) -> float:
    return 100 * v if col in FRACTION else v


def fmt(col: str, v) -> str:
    if v is None:
        return "–"
    if col in PERCENT:
        return f"{as_percent(col, v):.1f}"
    if col in LOWER_IS_BETTER:
        return f"{v:.3g}"
    return f"{v:.2f}" if isinstance(v, float) else str(v)


def to_markdown(rows: list[dict]) -> str:
    cols = ID_COLUMNS + metric_columns(rows)
    best = {c: (min if c in LOWER_IS_BETTER else max)((r[c] for r in rows if r[c] is not None), default=None)
            for c in metric_columns(rows) if c != "train_s"}
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        cells = []
        for c in cols:
            cell = fmt(c, r[c])
            if c in best and r[c] is not None and r[c] == best[c] and len(rows) > 1:
                cell = f"**{cell}**"
            cells.append(cell)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n\nverified, reward_acc, alpaca_*, oll_avg in %; bold = best in column.\n"


def to_csv(rows: list[dict]) -> str:
    cols = ["run"] + ID_COLUMNS + metric_columns(rows)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def to_json(rows: list[dict]) -> str:
    return json.dumps(rows, indent=2)


def to_rich(rows: list[dict]):
    from rich.table import Table

    cols = metric_columns(rows)
    table = Table(title="prefdistill-bench leaderboard (verified, reward_acc, alpaca, oll in %)")
    for c in ID_COLUMNS:
        table.add_column(c, style="bold" if c == "method" else None)
    for c in cols:
        table.add_column(c, justify="right")
    for r in rows:
        table.add_row(*[fmt(c, r[c]) for c in ID_COLUMNS + cols])
    return table


def plot(rows: list[dict], out: Path) -> Path:
    """Grouped bar chart: one group per metric (0–1 metrics), one bar per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = [c for c in metric_columns(rows) if c in PERCENT]
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(cols) * max(1, len(rows)) / 3), 4))
    width = 0.8 / max(len(rows), 1)
    for i, r in enumerate(rows):
        xs = [j + i * width for j in range(len(cols))]
        ax.bar(xs, [as_percent(c, r[c] or 0) for c in cols], width, label=f"{r['method']} {r['settings']}".strip())
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(cols))], cols)
    ax.set_ylabel("score (%)")
    ax.set_title("prefdistill-bench")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def radar(rows: list[dict], out: Path) -> Path:
    """MT-Bench per-category radar, one polygon per run that has MT-Bench categories."""
    import math

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [r for r in rows if r.get("mtbench_categories")]
    if not runs:
        from bench.errors import BenchError

        raise BenchError("no run has MT-Bench categories; run `bench eval RUN --suite mtbench` first")
    cats = sorted({c for r in runs for c in r["mtbench_categories"]})
    angles = [2 * math.pi * i / len(cats) for i in range(len(cats))] + [0.0]
    fig, ax = plt.subplots(figsize=(6, 6), subplot_kw={"polar": True})
    for r in runs:
        vals = [r["mtbench_categories"].get(c) or 0 for c in cats]
        ax.plot(angles, vals + vals[:1], label=f"{r['method']} {r['settings']}".strip())
        ax.fill(angles, vals + vals[:1], alpha=0.1)
    ax.set_xticks(angles[:-1], cats)
    ax.set_ylim(0, 10)
    ax.set_title("MT-Bench by category")
    ax.legend(fontsize=7, loc="upper right", bbox_to_anchor=(1.3, 1.1))
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return Path(out)

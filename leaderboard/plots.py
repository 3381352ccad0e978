"""Plots of aggregated leaderboard rows (PNG or PDF, by the file's suffix): bars with 95% intervals, the MT-Bench
radar in the official category order (missing categories are gaps, never zeros), and hyper-parameter sweep curves
with interval bands."""
from __future__ import annotations

import math
from pathlib import Path

from bench.errors import BenchError
from leaderboard.metrics import BY_COL, METRICS

MTBENCH_CATEGORIES = ("writing", "roleplay", "reasoning", "math", "coding", "extraction", "stem", "humanities")


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, out: Path) -> Path:
    out = Path(out)
    if out.suffix.lower() not in (".png", ".pdf"):
        raise BenchError(f"{out}: plots are written as .png or .pdf; change the file name")
    fig.savefig(out, dpi=150, bbox_inches="tight")
    _plt().close(fig)
    return out


def _colors(names: list[str]) -> dict[str, object]:
    import matplotlib

    cmap = matplotlib.colormaps["tab10"]
    return {n: cmap(i % 10) for i, n in enumerate(sorted(set(names)))}


def _label(g: dict) -> str:
    return g["method"] + (f"\n{g['settings']}" if g["settings"] else "")


REFERENCES = (("dpo_teacher", "π_dpo (DPO teacher)", "-", "tab:red"),
              ("sft_student", "SFT student (the start)", "--", "0.35"),
              ("chosen", "chosen side of the student's pairs", ":", "tab:green"))


def shared_references(groups: list[dict], keys=tuple(k for k, *_ in REFERENCES)) -> dict[str, float]:
    """The reference levels (verified score, 0-1) every run of the table shares (one teacher, student and data):
    the DPO teacher, the SFT student the runs start from, the chosen side of their pairs. A level the runs
    disagree on (the table mixes teachers or data) is left out; so is one no run recorded."""
    out = {}
    for key in keys:
        values = {round(r["references"][key], 6) for g in groups for r in g.get("_runs", ())
                  if key in r.get("references", {})}
        if len(values) == 1:
            out[key] = values.pop()
    return out


def bars(groups: list[dict], out: Path) -> Path:
    """One panel per metric; a bar per row with its 95% interval; `n=` seeds above each bar; hatched = partial."""
    plt = _plt()
    cols = [m.col for m in METRICS if any(g.get(m.col) is not None for g in groups)]
    if not cols:
        raise BenchError("no metric to plot; evaluate the runs first")
    colors = _colors([g["method"] for g in groups])
    fig, axes = plt.subplots(1, len(cols), figsize=(max(4.0, 0.55 * len(groups) + 1.5) * len(cols), 4.2),
                             squeeze=False)
    for ax, col in zip(axes[0], cols):
        m = BY_COL[col]
        for i, g in enumerate(groups):
            v = g.get(col)
            if v is None:
                ax.text(i, 0, "n/a", ha="center", va="bottom", fontsize=7, color="0.4")
                continue
            ci = g.get(f"{col}_ci")
            yerr = None if ci is None else [[(v - ci[0]) * m.scale], [(ci[1] - v) * m.scale]]
            ax.bar(i, v * m.scale, color=colors[g["method"]], yerr=yerr, capsize=3, edgecolor="black",
                   linewidth=0.5, hatch="//" if g.get(f"{col}_partial") else None)
            top = (ci[1] if ci else v) * m.scale
            ax.annotate(f"n={g['n_seeds']}", (i, top), xytext=(0, 3), textcoords="offset points", ha="center",
                        va="bottom", fontsize=7)
        ax.set_xticks(range(len(groups)), [_label(g) for g in groups], rotation=45, ha="right", fontsize=7)
        ax.set_ylabel(f"{m.label} ({m.unit})")
        if m.unit == "%":
            ax.set_ylim(0, 108)
        ax.set_title(m.label)
        if col == "verified":
            refs = shared_references(groups)
            for key, text, style, color in REFERENCES:
                if key in refs:
                    ax.axhline(100 * refs[key], linestyle=style, color=color, linewidth=1.2, zorder=3,
                               label=f"{text}: {100 * refs[key]:.1f}")
            if refs:  # room above 100% for the legend, so no reference line runs under it
                ax.set_ylim(0, 100 + 11 * len(refs))
                ax.set_yticks(range(0, 101, 20))
                ax.legend(fontsize=7, loc="upper right", framealpha=0.9)
        ax.spines[["top", "right"]].set_visible(False)
    fig.suptitle("mean over seeds, error bars: 95% interval; n = seeds", fontsize=9)
    fig.tight_layout()
    return _save(fig, out)


def radar(groups: list[dict], out: Path) -> Path:
    """MT-Bench per-category radar, official FastChat order; a missing category breaks the line (a gap)."""
    plt = _plt()
    rows = [g for g in groups if g.get("mtbench_categories")]
    if not rows:
        raise BenchError("no run has MT-Bench categories; run `bench eval RUN --suite mtbench` first")
    extra = sorted({c for g in rows for c in g["mtbench_categories"]} - set(MTBENCH_CATEGORIES))
    cats = list(MTBENCH_CATEGORIES) + extra
    angles = [2 * math.pi * i / len(cats) for i in range(len(cats))]
    fig, ax = plt.subplots(figsize=(6.5, 6.5), subplot_kw={"polar": True})
    colors = _colors([_label(g) for g in rows])
    for g in rows:
        vals = [g["mtbench_categories"].get(c) for c in cats]
        ys = [float("nan") if v is None else v for v in vals]
        ax.plot(angles + angles[:1], ys + ys[:1], marker="o", ms=3, color=colors[_label(g)],
                label=f"{_label(g)} (n={g['n_seeds']})".replace("\n", " "))
        if all(v is not None for v in vals):
            ax.fill(angles, ys, alpha=0.08, color=colors[_label(g)])
    ax.set_xticks(angles, cats)
    ax.set_ylim(0, 10)
    ax.set_title("MT-Bench by category (gaps: not evaluated)")
    ax.legend(fontsize=7, loc="upper right", bbox_to_anchor=(1.35, 1.12))
    return _save(fig, out)


def sweep(groups: list[dict], param: str, out: Path, metric: str | None = None) -> Path:
    """Metric against one hyper-parameter: a line per method (and its other settings) with its 95% band."""
    plt = _plt()
    rows = [g for g in groups if param in g["params"]]
    if not rows:
        raise BenchError(f"--sweep-plot {param}: no run sets {param!r}; run a sweep over it first "
                         f"(bench sweep --grid {param}=...)")
    col = metric or next((m.col for m in METRICS if any(g.get(m.col) is not None for g in rows)), None)
    if col not in BY_COL:
        raise BenchError(f"--sweep-metric {metric!r} is not a metric; use one of {', '.join(BY_COL)}")
    m = BY_COL[col]
    lines: dict[str, list[dict]] = {}
    for g in rows:
        rest = ",".join(p for p in g["settings"].split(",") if p and not p.startswith(f"{param}="))
        lines.setdefault(g["method"] + (f" ({rest})" if rest else ""), []).append(g)
    try:
        for pts in lines.values():
            pts.sort(key=lambda g: float(g["params"][param]))
    except (TypeError, ValueError):
        raise BenchError(f"--sweep-plot {param}: its values are not numbers") from None
    fig, ax = plt.subplots(figsize=(6, 4))
    colors = _colors(list(lines))
    for name, pts in lines.items():
        pts = [g for g in pts if g.get(col) is not None]
        xs = [float(g["params"][param]) for g in pts]
        ax.plot(xs, [g[col] * m.scale for g in pts], marker="o", color=colors[name],
                label=f"{name} (n={'/'.join(sorted({str(g['n_seeds']) for g in pts}))})")
        band = [g for g in pts if g.get(f"{col}_ci")]
        if band:
            ax.fill_between([float(g["params"][param]) for g in band], [g[f"{col}_ci"][0] * m.scale for g in band],
                            [g[f"{col}_ci"][1] * m.scale for g in band], alpha=0.2, color=colors[name])
    ax.set_xlabel(param)
    ax.set_ylabel(f"{m.label} ({m.unit})")
    ax.set_title(f"{m.label} vs {param} (band: 95% interval)")
    ax.legend(fontsize=7)
    ax.spines[["top", "right"]].set_visible(False)
    return _save(fig, out)

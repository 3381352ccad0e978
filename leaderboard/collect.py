"""Read run directories (and nothing else) into leaderboard rows: one row per run, one column per metric."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable

from bench.errors import BenchError
from bench.rundir import MARKER, RunDir


def _stderr(line: str) -> None:
    print(line, file=sys.stderr)

# metric column -> how to read it from metrics.json (evaluator name, field)
COLUMNS = {
    "verified": ("verified", "score"),
    "reward_acc": ("reward_accuracy", "score"),
    "rm": ("rm", "score"),
    "mtbench": ("mtbench", "score"),
    "alpaca_wr": ("alpacaeval", "score"),
    "alpaca_lc": ("alpacaeval", "length_controlled_winrate"),
    "oll_avg": ("oll", "score"),
    "value_kl": ("value_kl", "score"),
    "train_s": ("train", "seconds"),
}


def find_runs(root: Path) -> list[Path]:
    """Folders of `root` that are (or claim to be) run directories: a run marker or a manifest."""
    root = Path(root)
    if not root.is_dir():
        raise BenchError(f"runs directory {root} does not exist or is not a directory; train something with "
                         "`bench run` or pass --runs DIR")
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")
                  and ((p / MARKER).exists() or (p / "manifest.json").exists()))


def run_row(path: Path) -> dict:
    run = RunDir(path)
    manifest, metrics = run.manifest, run.metrics
    from bench.registry import get_method

    try:
        display = get_method(manifest["method"]).display_name or manifest["method"]
    except BenchError:
        display = manifest["method"]
    row = {"mtbench_categories": metrics.get("mtbench", {}).get("categories") or {}, "run": path.name, "method": display, "student": manifest.get("student"), "teacher": manifest.get("teacher"),
           "dataset": manifest.get("dataset"), "seed": manifest.get("seed"),
           "settings": _nondefault(manifest)}
    for col, (ev, field) in COLUMNS.items():
        value = metrics.get(ev, {}).get(field)
        row[col] = value if isinstance(value, (int, float)) else None
    return row


def _nondefault(manifest: dict) -> str:
    given = manifest.get("config", {}).get("method_settings", {})
    return ",".join(f"{k}={v}" for k, v in sorted(given.items()))


def collect(root: Path, warn: Callable[[str], None] | None = None) -> list[dict]:
    """Rows of every finished run under `root` whose files pass their checksums; any other folder is skipped
    with one warning line naming it and why (an unfinished, corrupt or old-format run never breaks the table)."""
    rows = []
    for p in find_runs(root):
        try:
            RunDir.open(p)
            rows.append(run_row(p))
        except BenchError as e:
            (warn or _stderr)(f"warning: skipped {p.name}: {e}")
    return sorted(rows, key=lambda r: (r["student"] or "", r["dataset"] or "", -(r["verified"] or -1e9)))


def metric_columns(rows: list[dict]) -> list[str]:
    """Metric columns that at least one run has."""
    return [c for c in COLUMNS if any(r[c] is not None for r in rows)]

"""Read run directories (and nothing else) into leaderboard rows: one row per run, one column per metric."""
from __future__ import annotations

import json
from pathlib import Path

from bench.errors import BenchError

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
    root = Path(root)
    if not root.exists():
        raise BenchError(f"runs directory {root} does not exist; train something with `bench run` or pass --runs DIR")
    return sorted(p.parent for p in root.glob("*/manifest.json"))


def run_row(path: Path) -> dict:
    manifest = json.loads((path / "manifest.json").read_text())
    metrics_path = path / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
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


def collect(root: Path) -> list[dict]:
    rows = [run_row(p) for p in find_runs(root)]
    return sorted(rows, key=lambda r: (r["student"] or "", r["dataset"] or "", -(r["verified"] or -1e9)))


def metric_columns(rows: list[dict]) -> list[str]:
    """Metric columns that at least one run has."""
    return [c for c in COLUMNS if any(r[c] is not None for r in rows)]

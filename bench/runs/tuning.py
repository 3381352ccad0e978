"""Fair tuning as a protocol, not a manual step: each method's grid is searched on the *validation* score at one
seed, then the best point runs at every seed (`bench sweep` with `tune_seed:`); `bench leaderboard --tuned` shows
that point, one row per method.

Selection reads only a run's validation record: the score of the checkpoint its trainer selected on the validation
split (`select_by`: verified, reward accuracy or RM score on `pref_val`), stored in the manifest. A test score never
enters it. Ties go to the first setting in label order, so a rerun selects the same point."""
from __future__ import annotations

import json
from pathlib import Path


def validation_of(manifest: dict, run_path: Path | str | None = None) -> float | None:
    """A run's validation score: the manifest's record, else (runs made before it existed) the selected evaluation
    in train_log.json; None when the run validated nothing (select_by=last)."""
    record = manifest.get("validation")
    if isinstance(record, dict) and isinstance(record.get("score"), (int, float)):
        return float(record["score"])
    if run_path is not None:
        try:
            evals = json.loads((Path(run_path) / "train_log.json").read_text()).get("evals") or []
        except (OSError, ValueError):
            return None
        best = next((e for e in evals if e.get("selected")), None)
        if best is not None and isinstance(best.get("score"), (int, float)):
            return float(best["score"])
    return None


def select(candidates: list[dict], seed: int) -> dict[str, dict]:
    """{method key: chosen candidate}. A candidate is {"method": key of what is tuned (a method, or a method on one
    student/teacher/dataset), "key": the setting's id, "label": its settings as text, "seed", "validation"}. Per
    method, among the candidates run at `seed` with a validation score, the highest score wins (ties: the first
    label). Methods without one are left out."""
    best: dict[str, dict] = {}
    for c in sorted(candidates, key=lambda c: (str(c["method"]), str(c["label"]))):
        if c["seed"] != seed or c.get("validation") is None:
            continue
        held = best.get(c["method"])
        if held is None or c["validation"] > held["validation"]:
            best[c["method"]] = c
    return best


def grid_report(candidates: list[dict], seed: int) -> list[dict]:
    """Every candidate at `seed` with its validation score and whether it was chosen (for `bench sweep` and the
    note a user keeps): [{"method", "label", "validation", "chosen"}], sorted by method then score."""
    chosen = {(c["method"], c["key"]) for c in select(candidates, seed).values()}
    rows = [{"method": c["method"], "label": c["label"], "validation": c.get("validation"),
             "chosen": (c["method"], c["key"]) in chosen} for c in candidates if c["seed"] == seed]
    return sorted(rows, key=lambda r: (str(r["method"]), -(r["validation"] if r["validation"] is not None
                                                             else float("-inf")), str(r["label"])))

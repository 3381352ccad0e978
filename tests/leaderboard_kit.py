"""Finished run directories with hand-chosen metrics, for the leaderboard's aggregation and rendering tests."""
from __future__ import annotations

from pathlib import Path

from bench.store.files import atomic_write_json
from bench.store.rundir import RunDir


def make_run(root: Path, name: str, *, method: str = "dpo", seed: int = 0, settings: dict | None = None,
             overrides: dict | None = None, preset: str = "embedded", items: dict | None = None,
             metrics: dict | None = None, cost: dict | None = None, student: str = "stu", teacher: str = "tea",
             dataset: str = "embedded", validation: float | None = None, references: dict | None = None) -> Path:
    """`items`: {metric section: {item id: score}} (the score is their mean); `metrics`: extra sections;
    `validation`: the selected checkpoint's validation score (the manifest's record)."""
    from bench.registry import get_method

    d = Path(root) / name
    d.mkdir(parents=True)
    resolved = get_method(method).make_config(settings or {}).to_dict()
    manifest = {"run_id": name, "method": method, "student": student, "teacher": teacher, "dataset": dataset,
                "seed": seed, "preset": preset, "method_settings": resolved,
                "config": {"method_settings": settings or {}, "stage_overrides": overrides or {}},
                "run_preset": {"student": {"train": {"lr": 1e-5, **(overrides or {})}}},
                "model_identities": {"student": student, "teacher": teacher}, "data_hashes": {"test": "h"},
                "cost": cost or {}, "references": references}
    if validation is not None:
        manifest["validation"] = {"by": "verified", "score": validation, "step": 3}
    out = {"train": {"seconds": 10.0 + seed}}
    for section, per in (items or {}).items():
        out[section] = {"score": sum(per.values()) / len(per), "n": len(per), "items": per}
    out.update(metrics or {})
    atomic_write_json(d / "manifest.json", manifest)
    atomic_write_json(d / "metrics.json", out)
    run = RunDir(d)
    run.begin(name, {})
    run.finish()
    return d

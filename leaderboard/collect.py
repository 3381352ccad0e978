"""Read run directories (and nothing else) into per-run rows: identity, settings, metrics, per-item scores, costs."""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Callable

from bench.errors import BenchError
from bench.runs.tuning import validation_of
from bench.store.rundir import RunDir, find_runs
from leaderboard.metrics import METRICS

DEFAULT_PRESET = "embedded"


def _stderr(line: str) -> None:
    print(line, file=sys.stderr)


def _method_info(name: str) -> tuple[str, dict | None]:
    """(display name, default settings) of an installed plugin; (name, None) when it is not installed."""
    from bench.registry import get_method

    try:
        method = get_method(name)
        return method.display_name or name, method.config_cls().to_dict()
    except BenchError:
        return name, None


def settings_of(manifest: dict) -> dict[str, object]:
    """Everything that is not the default: method settings, run-preset overrides, the preset, the SFT data."""
    config = manifest.get("config", {})
    _, defaults = _method_info(manifest.get("method", ""))
    resolved = manifest.get("method_settings") or {}
    if defaults is None:  # plugin not installed: what the user set is all we know
        out = dict(config.get("method_settings") or {})
    else:
        out = {k: v for k, v in resolved.items() if k in defaults and defaults[k] != v}
    out.update(config.get("stage_overrides") or {})
    if manifest.get("preset", DEFAULT_PRESET) != DEFAULT_PRESET:
        out["preset"] = manifest["preset"]
    sft = (manifest.get("run_preset") or {}).get("sft_dataset")
    if sft and "sft_dataset" not in out:
        out["sft_dataset"] = sft
    return out


def label(settings: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(settings.items()))


def group_id(manifest: dict) -> str:
    """Runs that differ only in their seed share this id."""
    from bench.train.trainer import result_preset

    keep = {"method": manifest.get("method"), "settings": manifest.get("method_settings"),
            "preset": result_preset(manifest.get("run_preset") or {}), "student": manifest.get("student"),
            "teacher": manifest.get("teacher"), "dataset": manifest.get("dataset"),
            "models": manifest.get("model_identities"), "data": manifest.get("data_hashes")}
    return hashlib.sha256(json.dumps(keep, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _number(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def diagnostics_of(manifest: dict, metrics: dict) -> dict:
    """What explains a score (`bench leaderboard --diagnostics`): the reward margin, the selected checkpoint step,
    the SFT student's KL to the teacher on the same states, the house-style share of the styled test prompts,
    verified % per task family."""
    verified = metrics.get("verified") or {}
    fam = verified.get("per_family") or {}
    return {"margin": _number((metrics.get("reward_accuracy") or {}).get("margin")),
            "house_style": _number(verified.get("house_style")),
            "selected_step": manifest.get("selected_step"),
            "teacher_kl_start": _number((metrics.get("teacher_kl") or {}).get("sft_student")),
            "families": {str(k): float(v) for k, v in fam.items() if _number(v) is not None}}


def run_row(path: Path) -> dict:
    run = RunDir(path)
    manifest, metrics = run.manifest, run.metrics
    display, _ = _method_info(manifest.get("method", ""))
    settings = settings_of(manifest)
    row = {"run": path.name, "path": str(path), "method": display, "method_name": manifest.get("method"),
           "student": manifest.get("student"), "teacher": manifest.get("teacher"),
           "dataset": manifest.get("dataset"), "seed": manifest.get("seed"), "preset": manifest.get("preset"),
           "settings": label(settings), "params": {**(manifest.get("method_settings") or {}),
                                                   **((manifest.get("config") or {}).get("stage_overrides") or {})},
           "group": group_id(manifest), "metrics": {}, "items": {}, "partial": {},
           "mtbench_categories": (metrics.get("mtbench") or {}).get("categories") or {},
           "cost": manifest.get("cost") or {}, "train_s": (metrics.get("train") or {}).get("seconds"),
           "validation": validation_of(manifest, path),
           "diagnostics": diagnostics_of(manifest, metrics),
           "references": {k: float(v) for k, v in (manifest.get("references") or {}).items() if _number(v) is not None}}
    for m in METRICS:
        section = metrics.get(m.evaluator) or {}
        value = section.get(m.field)
        row["metrics"][m.col] = _number(value)
        if m.field == "score" and isinstance(section.get("items"), dict):
            row["items"][m.col] = {str(k): float(v) for k, v in section["items"].items()}
        row["partial"][m.col] = bool(section.get("partial"))
    return row


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
    return rows


def apply_filters(rows: list[dict], filters: list[str]) -> list[dict]:
    """`key=v1,v2` keeps rows whose key (method, student, teacher, dataset, preset, seed, settings) is one of the
    values (method matches the plugin name or its display name; settings matches a substring)."""
    keys = ("method", "student", "teacher", "dataset", "preset", "seed", "settings")
    for f in filters:
        if "=" not in f:
            raise BenchError(f"--filter {f!r} must look like key=value[,value] with key one of {', '.join(keys)}")
        key, values = f.split("=", 1)
        key, wanted = key.strip(), [v.strip() for v in values.split(",") if v.strip()]
        if key not in keys:
            raise BenchError(f"--filter key {key!r} is unknown; use one of {', '.join(keys)}")

        def keep(r, key=key, wanted=wanted):
            if key == "method":
                return r["method_name"] in wanted or r["method"] in wanted
            if key == "settings":
                return any(w in r["settings"] for w in wanted)
            return str(r.get(key)) in wanted
        rows = [r for r in rows if keep(r)]
    return rows

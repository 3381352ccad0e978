"""Experiment tracking of a run's training: `train_log.jsonl` appended every step, and accelerate's trackers
(`--report-to tensorboard|wandb`, default none).

Every record is one JSON line: `{"event": "train", "step", "lr", "loss", <the method's metrics>, "tokens_per_s",
"elapsed_s"}` per optimizer step and `{"event": "eval", "step", "score", ...}` per validation. The file is
written as training goes (`tail -f runs/RUN/train_log.jsonl`); a resumed run rewrites it from the saved state's
history first, so it never holds steps the resumed state does not. The trackers get the same numbers as
`train/loss`, `train/lr`, `train/tokens_per_s`, `train/<metric>` and `val/score` (and the other numeric
validation results) at the optimizer step, plus the run's configuration as hyperparameters:
- tensorboard: event files in `<run>/tensorboard/` (`tensorboard --logdir runs` shows every run by name);
- wandb: project `$WANDB_PROJECT` (default prefdistill-bench), run name = the run directory's name; wandb's own
  settings (`WANDB_MODE=offline`, `WANDB_DIR`, ...) apply.
"""
from __future__ import annotations

import importlib.util
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from bench.errors import BenchError

REPORT_TO = ("none", "tensorboard", "wandb")
_PACKAGES = {"tensorboard": ("tensorboard", "tensorboardX"), "wandb": ("wandb",)}


def check_report_to(value: str) -> str:
    value = (value or "none").strip().lower()
    if value not in REPORT_TO:
        raise BenchError(f"--report-to {value!r} is invalid; use {', '.join(REPORT_TO)}")
    if value != "none" and not any(importlib.util.find_spec(p) for p in _PACKAGES[value]):
        raise BenchError(f"--report-to {value} needs the '{_PACKAGES[value][0]}' package; install it with "
                         f"`pip install {_PACKAGES[value][0]}` (or `pip install -e .[tracking]`), or drop --report-to")
    return value


def flat_config(obj, prefix: str = "") -> dict:
    """Scalars of a nested dict as `a/b/c` keys (what trackers accept as hyperparameters)."""
    out = {}
    for k, v in (obj or {}).items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flat_config(v, key + "/"))
        elif isinstance(v, (int, float, str, bool)):
            out[key] = v
        elif v is not None:
            out[key] = str(v)
    return out


@dataclass
class Tracking:
    report_to: str = "none"
    log_file: Path | None = None
    project_dir: Path | None = None
    run_name: str = "train"
    config: dict = field(default_factory=dict)
    _active: bool = False

    def accelerator_kwargs(self) -> dict:
        if self.report_to == "none":
            return {}
        return {"log_with": self.report_to, "project_dir": str(self.project_dir or ".")}

    def start(self, accel, history: list[dict], evals: list[dict]) -> None:
        if self.log_file is not None:  # a resumed run: exactly the restored history, then appended from there
            records = [{"event": "train", **h} for h in history] + [{"event": "eval", **e} for e in evals]
            records.sort(key=lambda r: (r["step"], r["event"] == "eval"))
            self._write(records, "w")
        if self.report_to != "none":
            name = "tensorboard" if self.report_to == "tensorboard" else \
                os.environ.get("WANDB_PROJECT", "prefdistill-bench")
            kwargs = {"wandb": {"name": self.run_name}} if self.report_to == "wandb" else {}
            accel.init_trackers(name, config=flat_config(self.config), init_kwargs=kwargs)
            self._active = True

    def step(self, accel, record: dict, tokens: int, seconds: float, elapsed: float) -> None:
        rec = {"event": "train", **record, "tokens_per_s": round(tokens / max(seconds, 1e-9), 1),
               "elapsed_s": round(elapsed, 3)}
        self._write([rec], "a")
        if self._active:
            accel.log({f"train/{k}": v for k, v in rec.items() if k not in ("event", "step")
                       and isinstance(v, (int, float))}, step=record["step"])

    def eval(self, accel, record: dict) -> None:
        self._write([{"event": "eval", **record}], "a")
        if self._active:
            accel.log({f"val/{k}": v for k, v in record.items() if k != "step" and isinstance(v, (int, float))
                       and not isinstance(v, bool)}, step=record["step"])

    def end(self, accel) -> None:
        if self._active:
            accel.end_training()
            self._active = False

    def _write(self, records: list[dict], mode: str) -> None:
        if self.log_file is None:
            return
        with open(self.log_file, mode, encoding="utf-8") as f:
            for r in records:
                f.write(json.dumps(r, ensure_ascii=False, default=str) + "\n")
            f.flush()

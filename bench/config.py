"""Run configuration: the CLI's choices plus a YAML run preset (configs/runs/*.yaml) and `--set` overrides."""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from bench.errors import BenchError
from bench.paths import CONFIG_DIR

TOP_LEVEL_KEYS = ("models", "sizes", "families", "data_seed", "k", "tau", "infer_batch_size", "generation", "select_by",
                  "val_prompts", "sft_dataset", "system_prompt",
                  "max_prompt_len", "max_response_len", "ref_teacher", "dpo_teacher", "rdpo_teacher", "chosen_teacher",
                  "sft_student", "student", "student_pairs", "teacher")  # teacher: a served teacher (teacher.server)


@dataclass
class RunConfig:
    method: str
    student: str | None = None  # None: the run preset's `models.student` (else DEFAULT_STUDENT)
    teacher: str | None = None  # None: the preset's `models.teacher` for its own student, else the student's pair
    dataset: str = "embedded"
    seed: int = 0
    preset: str = "embedded"
    method_settings: dict[str, Any] = field(default_factory=dict)
    stage_overrides: dict[str, Any] = field(default_factory=dict)
    runs_dir: str = "runs"
    run_name: str | None = None
    resume: bool = False
    eval_suite: tuple[str, ...] = ()
    report_to: str = "none"  # experiment tracker of the student's training (bench.train.tracking); not part of a result

    def to_dict(self) -> dict:
        return asdict(self)


DEFAULT_STUDENT = "smollm2-135m-l12"


def resolve_models(cfg: RunConfig, models: dict | None) -> RunConfig:
    """Fill in the student and teacher a run preset names (its `models:` section) where the CLI gave none.
    The preset's teacher goes with the preset's student only; another student gets its own pair's teacher."""
    models = models or {}
    if not isinstance(models, dict):
        raise BenchError(f"run preset '{cfg.preset}': 'models' must be a mapping like "
                         "{student: NAME, teacher: NAME}")
    student = cfg.student or models.get("student") or DEFAULT_STUDENT
    teacher = cfg.teacher or (models.get("teacher") if student == models.get("student") else None)
    return replace(cfg, student=str(student), teacher=None if teacher is None else str(teacher))


def parse_value(text: str) -> Any:
    """`--set` values are YAML scalars: 1e-5, 3, true, name."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, str):  # YAML 1.1 reads 1e-5 (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    return value


def key_values(pairs: list[str]) -> list[tuple[str, str]]:
    """`--set key=value` items as (key, raw value) pairs; one error for an item without `=`."""
    out = []
    for item in pairs:
        if "=" not in item:
            raise BenchError(f"--set {item!r} must look like key=value (e.g. --set beta=0.1)")
        key, value = item.split("=", 1)
        out.append((key.strip(), value))
    return out


def split_sets(pairs: list[str], method_fields: set[str]) -> tuple[dict, dict]:
    """Split `key=value` pairs into method settings (plain names of the method's config) and preset overrides
    (dotted keys or top-level preset keys)."""
    method, stage = {}, {}
    for key, value in key_values(pairs):
        if key in method_fields:
            method[key] = value
        elif key.split(".")[0] in TOP_LEVEL_KEYS:
            stage[key] = parse_value(value)
        else:
            raise BenchError(f"--set {key}: not a setting of this method ({', '.join(sorted(method_fields)) or 'none'})"
                             f" nor a run-preset key ({', '.join(TOP_LEVEL_KEYS)}); see `bench methods`")
    return method, stage


def load_run_preset(name: str, overrides: dict[str, Any]) -> dict:
    path = Path(name) if name.endswith((".yaml", ".yml")) else CONFIG_DIR / "runs" / f"{name}.yaml"
    if not path.exists():
        known = sorted(p.stem for p in (CONFIG_DIR / "runs").glob("*.yaml"))
        raise BenchError(f"unknown run preset '{name}'; choose from {', '.join(known)} or pass a YAML path")
    preset = yaml.safe_load(path.read_text()) or {}
    preset = copy.deepcopy(preset)
    for key, value in overrides.items():
        node = preset
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise BenchError(f"--set {key}: '{p}' is not a section of the run preset")
        node[parts[-1]] = value
    return preset


def data_seed(preset: dict) -> int:
    """The preset's `data_seed` (default 0): the seed that builds the dataset, independent of the run's `--seed`."""
    value = preset.get("data_seed", 0)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise BenchError(f"data_seed={value!r} is invalid; it must be a non-negative integer (e.g. --set data_seed=0)")
    return value

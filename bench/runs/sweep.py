"""`bench sweep`: a grid of methods × settings × seeds, each cell run exactly like `bench run`.

Shared stages are built once (the stage cache and its locks), finished cells are reused, a failed cell is recorded
with its one-line error and the sweep goes on; a rerun finishes only what is missing. `--jobs N` runs cells in N
parallel `bench run` processes (safe through the per-stage and per-run locks); their output goes to one log file
per cell. The record of every cell (status, run directory, error, seconds) is kept in
`<runs>/.sweeps/<name>.json`.

A sweep file (YAML, e.g. configs/sweeps/*.yaml) holds the same options:
    name: embedded-main
    methods: [sft, dpo, dckd]
    seeds: [0, 1, 2]
    grid: {beta: [0.05, 0.1]}       # method settings or run-preset keys; a key applies to the methods that have it
    set: {student.train.lr: 2.0e-5}  # fixed for every cell
    preset: embedded                  # and student, teacher, dataset, eval
"""
from __future__ import annotations

import dataclasses
import itertools
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from bench.config import TOP_LEVEL_KEYS, RunConfig, split_sets
from bench.errors import BenchError
from bench.paths import CONFIG_DIR
from bench.registry import get_method
from bench.store.files import atomic_write_json
from bench.store.rundir import sanitize_name

SPEC_KEYS = ("name", "methods", "seeds", "grid", "set", "preset", "student", "teacher", "dataset", "eval", "runs")


@dataclass
class SweepSpec:
    name: str = "sweep"
    methods: list[str] = field(default_factory=list)
    seeds: list[int] = field(default_factory=lambda: [0])
    grid: dict[str, list] = field(default_factory=dict)
    set: dict[str, object] = field(default_factory=dict)
    preset: str = "embedded"
    student: str = "smollm2-135m-l12"
    teacher: str | None = None
    dataset: str = "embedded"
    eval: list[str] = field(default_factory=list)
    runs: str = "runs"


@dataclass
class Cell:
    method: str
    seed: int
    grid: dict[str, object]
    args: list[str]  # `key=value` strings (fixed sets, then this cell's grid values)

    @property
    def label(self) -> str:
        extra = ",".join(f"{k}={v}" for k, v in self.grid.items())
        return f"{self.method}" + (f"[{extra}]" if extra else "") + f" seed {self.seed}"


def load_spec(path: str | Path | None, **cli) -> SweepSpec:
    """A sweep file (a path, or a name under configs/sweeps/), then the command line's options on top."""
    data: dict = {}
    if path:
        p = Path(path)
        if not p.exists() and (CONFIG_DIR / "sweeps" / f"{path}.yaml").exists():
            p = CONFIG_DIR / "sweeps" / f"{path}.yaml"
        if not p.is_file():
            known = ", ".join(sorted(f.stem for f in (CONFIG_DIR / "sweeps").glob("*.yaml")))
            raise BenchError(f"sweep file {path} not found; pass a YAML path or one of: {known}")
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise BenchError(f"sweep file {p} is not valid YAML ({e.__class__.__name__}); fix it") from None
        if not isinstance(data, dict) or set(data) - set(SPEC_KEYS):
            raise BenchError(f"sweep file {p}: unknown keys {sorted(set(data) - set(SPEC_KEYS))}; allowed: "
                             f"{', '.join(SPEC_KEYS)}")
        data.setdefault("name", p.stem)
    data.update({k: v for k, v in cli.items() if v not in (None, [], {}, "")})
    try:
        spec = SweepSpec(**data)
    except TypeError as e:
        raise BenchError(f"bad sweep specification: {e}") from None
    if not spec.methods:
        raise BenchError("a sweep needs methods: --methods dpo,dckd or `methods:` in the sweep file")
    if not isinstance(spec.grid, dict) or not all(isinstance(v, list) and v for v in spec.grid.values()):
        raise BenchError("grid must map each setting to a non-empty list of values (--grid beta=0.05,0.1)")
    spec.name = sanitize_name(spec.name)
    return spec


def _key_values(items: list[str], option: str, example: str) -> dict[str, str]:
    out = {}
    for item in items:
        if "=" not in item:
            raise BenchError(f"{option} {item!r} must look like {example.split(' ')[0]} (e.g. {option} {example.split(' ')[1]})")
        key, value = item.split("=", 1)
        out[key.strip()] = value.strip()
    return out


def parse_grid(items: list[str]) -> dict[str, list]:
    from bench.config import parse_value

    return {k: [parse_value(v.strip()) for v in values.split(",") if v.strip()]
            for k, values in _key_values(items, "--grid", "key=v1,v2 beta=0.05,0.1").items()}


def parse_sets(items: list[str]) -> dict[str, object]:
    return _key_values(items, "--set", "key=value beta=0.1")


def _applies(key: str, fields: set[str]) -> bool:
    return key in fields or key.split(".")[0] in TOP_LEVEL_KEYS


def expand(spec: SweepSpec) -> list[Cell]:
    """Every cell, validated before anything runs (unknown methods or settings fail here, in one line)."""
    cells = []
    for name in spec.methods:
        method = get_method(name)
        fields = {f.name for f in dataclasses.fields(method.config_cls)}
        bad = [k for k in spec.set if not _applies(k, fields)]
        if bad:
            raise BenchError(f"--set {bad[0]}: not a setting of method '{name}' nor a run-preset key")
        keys = [k for k in spec.grid if _applies(k, fields)]
        if spec.grid and not keys:
            keys = []  # none of the grid's keys is this method's: it runs once per seed
        fixed = [f"{k}={v}" for k, v in spec.set.items()]
        for values in itertools.product(*(spec.grid[k] for k in keys)):
            grid = dict(zip(keys, values))
            args = fixed + [f"{k}={v}" for k, v in grid.items()]
            method_settings, _ = split_sets(args, fields)
            method.make_config(method_settings)  # validate now, not in the middle of the sweep
            for seed in spec.seeds:
                cells.append(Cell(name, int(seed), grid, args))
    return cells


def run_config(spec: SweepSpec, cell: Cell) -> RunConfig:
    method = get_method(cell.method)
    settings, overrides = split_sets(cell.args, {f.name for f in dataclasses.fields(method.config_cls)})
    return RunConfig(method=cell.method, student=spec.student, teacher=spec.teacher, dataset=spec.dataset,
                     seed=cell.seed, preset=spec.preset, method_settings=settings, stage_overrides=overrides,
                     runs_dir=spec.runs, eval_suite=tuple(spec.eval))


def cli_args(spec: SweepSpec, cell: Cell) -> list[str]:
    args = ["run", "--method", cell.method, "--student", spec.student, "--dataset", spec.dataset, "--seed",
            str(cell.seed), "--preset", spec.preset, "--runs", spec.runs]
    if spec.teacher:
        args += ["--teacher", spec.teacher]
    if spec.eval:
        args += ["--eval", ",".join(spec.eval)]
    for a in cell.args:
        args += ["--set", a]
    return args


# ------------------------------------------------------------------------------------------------ running a sweep
class Record:
    """`<runs>/.sweeps/<name>.json`: every cell's status, rewritten atomically after each change."""

    def __init__(self, spec: SweepSpec, cells: list[Cell]):
        self.path = Path(spec.runs) / ".sweeps" / f"{spec.name}.json"
        self._lock = threading.Lock()
        self.data = {"name": spec.name, "spec": dataclasses.asdict(spec),
                     "cells": [{"method": c.method, "seed": c.seed, "grid": c.grid, "status": "pending"}
                               for c in cells]}
        self._write()

    def _write(self) -> None:
        atomic_write_json(self.path, self.data)

    def update(self, i: int, **fields) -> None:
        with self._lock:
            self.data["cells"][i].update(fields)
            self._write()


def _one_line(text: str) -> str:
    errors = [line[len("error: "):] for line in text.splitlines() if line.startswith("error: ")]
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return errors[-1] if errors else (lines[-1][:300] if lines else "no output")


def _run_here(spec: SweepSpec, cell: Cell) -> dict:
    from bench.runs.run import run_pipeline

    run = run_pipeline(run_config(spec, cell))
    return {"status": "reused" if getattr(run, "reused", False) else "done", "run": str(run.path)}


def _run_child(spec: SweepSpec, cell: Cell, log: Path, threads: int, launcher: list[str] | None = None) -> dict:
    env = {**os.environ, "BENCH_PROGRESS": "0"}
    env.setdefault("OMP_NUM_THREADS", str(threads))
    log.parent.mkdir(parents=True, exist_ok=True)
    cmd = [*launcher, "-m", "cli"] if launcher else [sys.executable, "-m", "cli"]
    with open(log, "w") as f:
        proc = subprocess.run([*cmd, *cli_args(spec, cell)], stdout=f, stderr=subprocess.STDOUT, env=env)
    text = log.read_text(errors="replace")
    if proc.returncode != 0:
        return {"status": "failed", "error": _one_line(text), "log": str(log)}
    last = [line for line in text.splitlines() if line.strip()][-1]
    return {"status": "reused" if "reusing it" in text else "done", "run": last.split(" ", 1)[0], "log": str(log)}


def run_sweep(spec: SweepSpec, jobs: int = 1, launcher: str | None = None) -> dict:
    """Run every missing cell; returns the record (cells with status done | reused | failed). With a `launcher`
    (e.g. "accelerate launch --config_file configs/accelerate/multi_gpu.yaml") every cell runs as
    `<launcher> -m cli run ...` in its own process group."""
    import shlex

    from bench.progress import console, overall_progress
    from bench.store.rundir import prepare_runs_dir

    if jobs < 1:
        raise BenchError(f"--jobs {jobs} is invalid; use 1 or more parallel cells")
    cells = expand(spec)
    prepare_runs_dir(spec.runs)
    record = Record(spec, cells)
    threads = max(1, (os.cpu_count() or 1) // jobs)

    def one(i: int, cell: Cell, bar) -> None:
        t0 = time.perf_counter()
        record.update(i, status="running")
        try:
            if jobs == 1 and not launcher:
                result = _run_here(spec, cell)
            else:
                log = Path(spec.runs) / ".sweeps" / spec.name / f"{i:03d}-{sanitize_name(cell.label)}.log"
                result = _run_child(spec, cell, log, threads, shlex.split(launcher) if launcher else None)
        except BenchError as e:
            result = {"status": "failed", "error": str(e)}
        except Exception as e:  # noqa: BLE001 - a broken cell must not stop the sweep; its error is recorded
            result = {"status": "failed", "error": f"{e.__class__.__name__}: {e}"}
        record.update(i, seconds=round(time.perf_counter() - t0, 1), **result)
        if result["status"] == "failed":
            console.print(f"[red]cell {cell.label} failed: {result['error']}")
        bar.advance(1)

    with overall_progress(f"sweep {spec.name}", total=len(cells), unit="cells") as bar:
        if jobs == 1:  # in order, each cell in this process (or, with a launcher, its own process group)
            for i, cell in enumerate(cells):
                one(i, cell, bar)
        else:
            with ThreadPoolExecutor(max_workers=jobs) as pool:
                list(pool.map(lambda ic: one(ic[0], ic[1], bar), enumerate(cells)))
    return record.data


def dry_run(spec: SweepSpec) -> list[dict]:
    """Every cell with what it would build: [{"cell", "run", "stages": [{"stage", "status"}]}]."""
    from bench.pipeline.graph import Pipeline
    from bench.runs.plan import Planner
    from bench.runs.run import default_run_name, run_identity
    from bench.store.rundir import RunDir

    out = []
    for cell in expand(spec):
        cfg = run_config(spec, cell)
        pipe = Pipeline(cfg)
        identity, _ = run_identity(pipe, cfg)
        run = RunDir(Path(spec.runs) / default_run_name(cfg, identity))
        marker = run.marker() if run.marker_path.exists() else None
        finished = bool(marker) and marker.get("state") == "finished" and marker.get("identity") == identity
        steps = [] if finished else Planner(pipe).student()
        out.append({"cell": cell.label, "run": str(run.path), "finished": finished,
                    "stages": [{"stage": s.what, "status": "cached" if s.cached else "build"} for s in steps]})
    return out


def summary_line(record: dict) -> str:
    counts = {s: sum(c["status"] == s for c in record["cells"]) for s in ("done", "reused", "failed")}
    return (f"sweep {record['name']}: {len(record['cells'])} cells, {counts['done']} trained, {counts['reused']} "
            f"reused, {counts['failed']} failed (record: .sweeps/{record['name']}.json)")

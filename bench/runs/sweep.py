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
    grids: {dpo: {beta: [0.05, 0.1], student.train.lr: [1.0e-5, 3.0e-5]}}  # a method's own grid, instead of `grid`
    tune_seed: 0                      # tune: every grid point at this seed, the best by validation at all seeds
    set: {student.train.lr: 2.0e-5}  # fixed for every cell
    preset: embedded                  # and student, teacher, dataset, eval

With `tune_seed`, the sweep runs in two phases: each method's grid at that seed, then (bench/runs/tuning.py) the
point with the best validation score of each method at the other seeds. The record keeps every point's validation
score and the choice; `bench leaderboard --tuned` shows the chosen rows.
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

SPEC_KEYS = ("name", "methods", "seeds", "grid", "grids", "tune_seed", "set", "preset", "student", "teacher", "dataset",
             "eval", "runs")


@dataclass
class SweepSpec:
    name: str = "sweep"
    methods: list[str] = field(default_factory=list)
    seeds: list[int] = field(default_factory=lambda: [0])
    grid: dict[str, list] = field(default_factory=dict)
    grids: dict[str, dict[str, list]] = field(default_factory=dict)
    tune_seed: int | None = None
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
    if not isinstance(spec.grids, dict) or not all(
            isinstance(g, dict) and all(isinstance(v, list) and v for v in g.values()) for g in spec.grids.values()):
        raise BenchError("grids must map a method to its own grid: {dpo: {beta: [0.05, 0.1]}}")
    if set(spec.grids) - set(spec.methods):
        raise BenchError(f"grids: {sorted(set(spec.grids) - set(spec.methods))} not among the sweep's methods "
                         f"({', '.join(spec.methods)})")
    if spec.tune_seed is not None and spec.tune_seed not in spec.seeds:
        raise BenchError(f"tune_seed {spec.tune_seed} must be one of the seeds {spec.seeds}: its runs are the first "
                         "seed of the chosen point")
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


def expand(spec: SweepSpec, seeds: list[int] | None = None, points: dict[str, dict] | None = None) -> list[Cell]:
    """Every cell, validated before anything runs (unknown methods or settings fail here, in one line). `seeds`
    replaces the spec's seeds; `points` ({method: grid point}) keeps only those points (the methods it names)."""
    cells = []
    for name in spec.methods if points is None else [m for m in spec.methods if m in points]:
        method = get_method(name)
        fields = {f.name for f in dataclasses.fields(method.config_cls)}
        bad = [k for k in spec.set if not _applies(k, fields)]
        if bad:
            raise BenchError(f"--set {bad[0]}: not a setting of method '{name}' nor a run-preset key")
        grid_spec = spec.grids.get(name, spec.grid)
        keys = [k for k in grid_spec if _applies(k, fields)]  # none of them this method's: one cell per seed
        bad = [k for k in spec.grids.get(name, {}) if not _applies(k, fields)]
        if bad:
            raise BenchError(f"grids.{name}.{bad[0]}: not a setting of method '{name}' nor a run-preset key")
        fixed = [f"{k}={v}" for k, v in spec.set.items()]
        for values in itertools.product(*(grid_spec[k] for k in keys)):
            grid = dict(zip(keys, values))
            if points is not None and grid != points[name]:
                continue
            args = fixed + [f"{k}={v}" for k, v in grid.items()]
            method_settings, _ = split_sets(args, fields)
            method.make_config(method_settings)  # validate now, not in the middle of the sweep
            for seed in spec.seeds if seeds is None else seeds:
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
    """`<runs>/.sweeps/<name>.json`: every cell's status (and a tuned sweep's choice), rewritten atomically after each
    change."""

    def __init__(self, spec: SweepSpec, cells: list[Cell]):
        self.path = Path(spec.runs) / ".sweeps" / f"{spec.name}.json"
        self._lock = threading.Lock()
        self.data = {"name": spec.name, "spec": dataclasses.asdict(spec), "cells": []}
        self.add(cells)

    def _write(self) -> None:
        atomic_write_json(self.path, self.data)

    def add(self, cells: list[Cell]) -> int:
        """Append cells (pending); returns the index of the first."""
        with self._lock:
            offset = len(self.data["cells"])
            self.data["cells"] += [{"method": c.method, "seed": c.seed, "grid": c.grid, "status": "pending"}
                                   for c in cells]
            self._write()
        return offset

    def update(self, i: int, **fields) -> None:
        with self._lock:
            self.data["cells"][i].update(fields)
            self._write()

    def put(self, key: str, value) -> None:
        with self._lock:
            self.data[key] = value
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


def _run_cells(spec: SweepSpec, cells: list[Cell], record: Record, offset: int, jobs: int, launcher: str | None,
               bar) -> None:
    import shlex

    from bench.progress import console

    threads = max(1, (os.cpu_count() or 1) // jobs)

    def one(i: int, cell: Cell) -> None:
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

    if jobs == 1:  # in order, each cell in this process (or, with a launcher, its own process group)
        for i, cell in enumerate(cells):
            one(offset + i, cell)
    else:
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            list(pool.map(lambda ic: one(offset + ic[0], ic[1]), enumerate(cells)))


def grid_label(grid: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(grid.items())) or "(defaults)"


def tuning_candidates(cells: list[Cell], entries: list[dict]) -> list[dict]:
    """The finished cells as candidates of bench.runs.tuning.select, with their runs' validation scores."""
    from bench.runs.tuning import validation_of
    from bench.store.rundir import RunDir

    out = []
    for cell, entry in zip(cells, entries):
        score = None
        if entry.get("status") in ("done", "reused") and entry.get("run"):
            try:
                score = validation_of(RunDir(entry["run"]).manifest, entry["run"])
            except BenchError:  # a run that fails its checksums is no candidate (the leaderboard skips it too)
                score = None
        out.append({"method": cell.method, "key": grid_label(cell.grid), "label": grid_label(cell.grid),
                    "grid": cell.grid, "seed": cell.seed, "validation": score})
    return out


def run_sweep(spec: SweepSpec, jobs: int = 1, launcher: str | None = None) -> dict:
    """Run every missing cell; returns the record (cells with status done | reused | failed). With a `launcher`
    (e.g. "accelerate launch --config_file configs/accelerate/multi_gpu.yaml") every cell runs as
    `<launcher> -m cli run ...` in its own process group. With `spec.tune_seed`: the grid at that seed first, then
    each method's validation-best point at the other seeds (module docstring)."""
    from bench.progress import console, overall_progress
    from bench.runs.tuning import grid_report, select
    from bench.store.rundir import prepare_runs_dir

    if jobs < 1:
        raise BenchError(f"--jobs {jobs} is invalid; use 1 or more parallel cells")
    tuned = spec.tune_seed is not None
    cells = expand(spec, seeds=[spec.tune_seed] if tuned else None)
    later = [s for s in spec.seeds if s != spec.tune_seed] if tuned else []
    prepare_runs_dir(spec.runs)
    record = Record(spec, cells)
    with overall_progress(f"sweep {spec.name}", total=len(cells) + len(spec.methods) * len(later),
                          unit="cells") as bar:
        _run_cells(spec, cells, record, 0, jobs, launcher, bar)
        if tuned:
            candidates = tuning_candidates(cells, record.data["cells"])
            chosen = select(candidates, spec.tune_seed)
            record.put("tuning", {"seed": spec.tune_seed, "by": "validation score of the selected checkpoint",
                                  "grid": grid_report(candidates, spec.tune_seed),
                                  "chosen": {m: c["grid"] for m, c in chosen.items()}})
            for m in (m for m in spec.methods if m not in chosen):
                console.print(f"[yellow]{m}: no grid point finished with a validation score at seed "
                              f"{spec.tune_seed}; it runs no other seed")
                bar.advance(len(later))
            more = expand(spec, seeds=later, points={m: c["grid"] for m, c in chosen.items()}) if chosen else []
            _run_cells(spec, more, record, record.add(more), jobs, launcher, bar)
    return record.data


def dry_run(spec: SweepSpec) -> list[dict]:
    """Every cell with what it would build: [{"cell", "run", "stages": [{"stage", "status"}]}]. A tuned sweep's
    later seeds depend on the grid's validation scores, so only its grid at the tuning seed is listed."""
    from bench.pipeline.graph import Pipeline
    from bench.runs.plan import Planner
    from bench.runs.run import default_run_name, run_identity
    from bench.store.rundir import RunDir

    out = []
    for cell in expand(spec, seeds=None if spec.tune_seed is None else [spec.tune_seed]):
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

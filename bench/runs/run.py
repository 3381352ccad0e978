"""`bench run`: stages → training → checkpoint selection → generations → evaluation, into one run directory.

Run directory: manifest.json (config, versions, content hashes, seed, git commit, stage keys, timings),
metrics.json, generations.jsonl (greedy, test prompts), checkpoint/ (HF safetensors), train_log.json, and the
marker .bench-run.json (identity, state, checksums; see bench/store/rundir.py).

Identity. A run is identified by the hash of everything that determines its result: the method and its resolved
settings, the code version of its loss and of the trainer, the content of the data (every split it reads), the
content of the student and teacher models, the resolved run preset with every `--set` override, and the seed.
The default run name ends with that hash, so a changed input gives a new run and never reuses an old one; a name
given with `--name` that already holds a run of another identity is refused with what changed.
"""
from __future__ import annotations

import datetime as dt
import os
import platform
import shutil
import subprocess
import sys
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from bench import dist
from bench.config import RunConfig
from bench.errors import BenchError
from bench.faults import fault_point
from bench.modeling.generate import decode, make_generator
from bench.paths import REPO_ROOT
from bench.pipeline.costs import closure
from bench.progress import console
from bench.store.files import atomic_write_json, write_jsonl
from bench.store.identity import diff_parts
from bench.store.rundir import MARKER, RunDir, prepare_runs_dir, run_path, sanitize_name, validate_run_name
from bench.store.stages import build_stage, cache_relative, content_key, recording_use, remove_owned, stage_path
from bench.store.usage import register_run
from bench.train.trainer import result_preset

PACKAGES = ("torch", "transformers", "accelerate", "datasets", "safetensors", "prefdistill-bench", "lm_eval",
            "alpaca_eval", "fschat", "openai")


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for p in PACKAGES:
        try:
            out[p] = version(p)
        except PackageNotFoundError:
            pass
    return out


def git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True,
                              timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def run_identity(pipe, cfg: RunConfig) -> tuple[str, dict]:
    """(hash, parts): every input of the run's result, by content (see the module docstring)."""
    parts = {"method": cfg.method, "student": pipe.student_key_for(cfg.method, cfg.method_settings),
             "preset": result_preset(pipe.preset), "test": pipe.data_key("test"), "student_model": pipe.base_key(cfg.student),
             "teacher_model": pipe.base_key(pipe.teacher)}
    return content_key(parts), parts


def default_run_name(cfg: RunConfig, identity: str) -> str:
    prefix = sanitize_name(f"{cfg.method}-{cfg.student}-{cfg.dataset}-s{cfg.seed}")[:180]
    return f"{prefix}-{identity[:8]}"


def _describe_changes(old: dict | None, new: dict) -> str:
    changed = diff_parts(old or {}, new)
    shown = ", ".join(changed[:4]) + (f" and {len(changed) - 4} more" if len(changed) > 4 else "")
    return shown or "unknown (no record)"


def _claim(run: RunDir, runs: Path, identity: str, parts: dict, resume: bool) -> bool:
    """Make `run` this process's run of `identity` (under the run lock). True: a finished run to reuse."""
    if not run.path.exists():
        if resume:
            console.print(f"[yellow]nothing to resume: {run.path} does not exist yet; starting the run")
        run.path.mkdir()
        run.begin(identity, parts)
        return False
    marker = run.marker()
    if marker is None:
        if any(run.path.iterdir()):
            raise BenchError(f"{run.path} exists and is not a bench run directory (no {MARKER}: made by hand or by "
                             "an older version); pass another --name or move it away")
        run.begin(identity, parts)
        return False
    finished = marker.get("state") == "finished"
    if marker.get("identity") != identity:
        raise BenchError(f"{run.path} holds {'a finished' if finished else 'an unfinished'} run of a different "
                         f"configuration (changed: {_describe_changes(marker.get('parts'), parts)}); pass another "
                         "--name, or move that run away")
    if finished:
        run.verify()
        if run.work_path.exists():  # left by a process killed after finishing: the run's own scratch space
            remove_owned(run.work_path, run.path, None)
        console.print(f"[green]run {run.path} is complete; reusing it (move it away to retrain)")
        return True
    if resume:
        console.print(f"[yellow]resuming the unfinished run {run.path}")
        return False
    console.print(f"[yellow]{run.path} holds an unfinished run of this configuration (an interrupted process); "
                  "starting it over (pass --resume to continue from its last saved state)")
    remove_owned(run.path, runs, MARKER)
    run.path.mkdir()
    run.begin(identity, parts)
    return False


def _has_state(run: RunDir) -> bool:
    from bench.train.checkpoint import latest_state

    return latest_state(run.work_path) is not None


def _abandon(run: RunDir, runs: Path, cfg: RunConfig, err: BaseException) -> None:
    """A failed run keeps only what a `--resume` can use; otherwise nothing of it is left behind."""
    marker = run.marker() if run.marker_path.exists() else None
    if not run.path.exists() or (marker or {}).get("state") != "running":
        return  # a finished run is never removed
    if _has_state(run):
        if isinstance(err, KeyboardInterrupt):
            err.bench_reported = True  # type: ignore[attr-defined]  (the CLI prints nothing more)
            console.print(f"interrupted; the unfinished run and its last training state are kept in {run.path}; "
                          f"continue it with: {resume_command(cfg)}", highlight=False, markup=False)
        else:
            console.print(f"the unfinished run is kept in {run.path}; continue it with: {resume_command(cfg)}",
                          style="yellow", highlight=False, markup=False)
        return
    try:
        remove_owned(run.path, runs, MARKER)
    except (BenchError, OSError):
        pass


def interrupted_message(cfg: RunConfig) -> str:
    """What to do after a Ctrl-C that left no training state of the run (the cached stages are kept)."""
    return (f"interrupted; finished stages stay cached and a stage's saved training state is picked up again; "
            f"continue with: {resume_command(cfg)}")


def resume_command(cfg: RunConfig) -> str:
    import shlex
    import sys

    args = [a for a in sys.argv[1:] if a != "--resume"] if sys.argv[1:2] == ["run"] else ["run", "--method",
                                                                                           cfg.method]
    return "bench " + " ".join(shlex.quote(a) for a in args) + " --resume"


def run_pipeline(cfg: RunConfig) -> RunDir:
    with recording_use() as used:  # every cache entry the run builds or reuses goes into its manifest
        return _run_pipeline(cfg, used)


def _run_pipeline(cfg: RunConfig, used: set[str]) -> RunDir:
    from bench.pipeline.graph import Pipeline

    t0 = time.perf_counter()
    if cfg.run_name is not None:
        validate_run_name(cfg.run_name)
    check_runs_dir(cfg.runs_dir)
    pipe = Pipeline(cfg)
    if dist.is_main():
        for line in pipe.notices:
            print(f"notice: {line}", file=sys.stderr, flush=True)
    pipe.used_entries = used
    cfg = pipe.cfg  # the student and teacher the preset names, filled in
    identity, parts = run_identity(pipe, cfg)
    if dist.world() > 1:
        return _run_collectively(pipe, cfg, identity, parts, t0)
    runs = prepare_runs_dir(cfg.runs_dir)
    run = RunDir(run_path(runs, cfg.run_name or default_run_name(cfg, identity)))
    with run.lock():
        run.reused = _claim(run, runs, identity, parts, cfg.resume)
        if not run.reused:
            try:
                _train_and_write(pipe, cfg, run, identity)
            except BaseException as e:
                _abandon(run, runs, cfg, e)
                raise
        if cfg.eval_suite:
            from bench.evaluators.run import run_evaluators

            run_evaluators([run.path], list(cfg.eval_suite), {}, None)
    console.print(f"[bold]{run.path}[/] done in {time.perf_counter() - t0:.0f}s")
    return run


def _run_collectively(pipe, cfg: RunConfig, identity: str, parts: dict, t0: float) -> RunDir:
    """The same run under `accelerate launch`: process 0 owns the run directory (lock, claim, every file written,
    evaluators); every process takes part in training (data parallel) and in building any missing stage."""
    from contextlib import nullcontext

    main = dist.is_main()
    runs = prepare_runs_dir(cfg.runs_dir) if main else Path(cfg.runs_dir).expanduser()
    run = RunDir(run_path(runs, cfg.run_name or default_run_name(cfg, identity)))
    with run.lock() if main else nullcontext():
        decision = None
        if main:
            try:
                decision = {"reused": _claim(run, runs, identity, parts, cfg.resume)}
            except BenchError as e:
                decision = {"error": str(e)}
        decision = dist.broadcast(decision)
        if "error" in decision:
            raise BenchError(decision["error"])
        run.reused = decision["reused"]
        if not run.reused:
            try:
                _train_and_write(pipe, cfg, run, identity)
            except BaseException as e:
                if main:
                    _abandon(run, runs, cfg, e)
                raise
        if main and cfg.eval_suite:
            from bench.evaluators.run import run_evaluators

            with dist.solo():
                run_evaluators([run.path], list(cfg.eval_suite), {}, None)
    dist.barrier()
    if main:
        console.print(f"[bold]{run.path}[/] done in {time.perf_counter() - t0:.0f}s")
    return run


def check_runs_dir(runs: str | Path) -> None:
    """Fail before any work when `--runs` cannot hold runs (not a directory, or not writable)."""
    p = Path(runs).expanduser()
    if p.exists():
        prepare_runs_dir(p)
        return
    parent = p.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise BenchError(f"cannot create --runs {p}: {parent} is not a writable directory; pass a writable "
                         "directory with --runs")


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _train_and_write(pipe, cfg: RunConfig, run: RunDir, identity: str) -> None:
    from bench.train.tracking import Tracking, flat_config

    t_start = time.perf_counter()
    if not dist.is_main():  # other processes take part in training only; process 0 writes the run
        pipe.train_student(run.work_path, resume=cfg.resume, tracking=None)
        return
    tracking = Tracking(report_to=cfg.report_to, log_file=run.path / "train_log.jsonl", project_dir=run.path,
                        run_name=run.path.name,
                        config=flat_config({"method": cfg.method, "settings": cfg.method_settings,
                                            "student": cfg.student, "teacher": pipe.teacher, "dataset": cfg.dataset,
                                            "seed": cfg.seed, "preset": cfg.preset,
                                            "train": pipe.stage_cfg("student").get("train", {})}))
    final, result, mcfg = pipe.train_student(run.work_path, resume=cfg.resume, tracking=tracking)
    with dist.solo():  # the rest is process 0's alone; the others wait at the run's end
        _write_results(pipe, cfg, run, identity, final, result, mcfg, t_start)


def _write_results(pipe, cfg: RunConfig, run: RunDir, identity: str, final, result, mcfg, t_start: float) -> None:
    from bench.evaluators import EvalContext, get_evaluator

    tmp_ckpt = run.path / ".checkpoint.tmp"
    if tmp_ckpt.exists():
        remove_owned(tmp_ckpt, run.path, None)
    shutil.copytree(final, tmp_ckpt)
    pipe.tok.save_pretrained(tmp_ckpt)
    fault_point("final-copy")
    if run.checkpoint_path.exists():
        remove_owned(run.checkpoint_path, run.path, None)
    tmp_ckpt.rename(run.checkpoint_path)

    t0 = time.perf_counter()
    from bench.modeling.models import load_model

    model = load_model(run.checkpoint_path)
    rows = pipe.split_rows("test")
    gen = make_generator(pipe.preset.get("generation", {}).get("backend", "hf"), model, pipe.tok,
                         model_path=run.checkpoint_path, batch_size=pipe.infer_bs)
    fault_point("test-generation")
    outs = gen.generate(pipe.prompts("test"), pipe.enc.max_response_len, desc="generate test")
    write_jsonl(run.generations_path, [{"id": r["id"], "prompt": r["prompt"], "response": decode(pipe.tok, o),
                                        "meta": r.get("meta", {})} for r, o in zip(rows, outs)])
    pipe.timings["generate:test"] = time.perf_counter() - t0
    atomic_write_json(run.path / "train_log.json", {"history": result.history, "evals": result.evals,
                                                    "seconds": result.seconds, "tokens_per_s": result.tokens_per_s})
    cost = {**pipe.run_cost, "generate_seconds": round(pipe.timings["generate:test"], 3),
            "wall_seconds": round(time.perf_counter() - t_start, 3), "stages": closure(getattr(pipe, "used_entries", ()))}
    from bench.pipeline.references import reference_levels

    atomic_write_json(run.manifest_path, {**manifest(pipe, cfg, mcfg, run, result, identity), "cost": cost,
                                          "references": reference_levels(pipe)})
    ctx = EvalContext(settings={"model": model})
    metrics = {"train": {"steps": result.steps, "seconds": round(result.seconds, 2),
                         "tokens_per_s": round(result.tokens_per_s, 1),
                         "final_loss": result.history[-1]["loss"] if result.history else None}}
    from bench.pipeline.selection import has_checkers

    for name in ("verified", "reward_accuracy") if has_checkers(rows) else ("reward_accuracy",):
        try:
            ev = get_evaluator(name)
            metrics[name] = {"version": ev.version, **ev.evaluate(run, ctx)}
        except BenchError as e:
            console.print(f"[yellow]{name} skipped: {e}")
    atomic_write_json(run.metrics_path, metrics)
    if pipe.stage_cfg("student").get("train", {}).get("keep_checkpoints") and (run.work_path / "checkpoints").exists():
        shutil.copytree(run.work_path / "checkpoints", run.path / "checkpoints", dirs_exist_ok=True)
    fault_point("run-publish")
    run.finish()
    register_run(run.path)
    remove_owned(run.work_path, run.path, None)  # the resumable state goes only once everything is written
    if not cfg.method_settings:  # a default-settings run can serve as `run:<method>` (e.g. ADPA+'s DCKD init)
        build_stage("student_run", pipe.model_key(f"run:{cfg.method}"),
                    lambda tmp: (shutil.copytree(run.checkpoint_path, tmp, dirs_exist_ok=True,
                                                 copy_function=_link_or_copy), {"from_run": str(run.path)})[1])


def data_hashes(pipe) -> dict:
    """Each split's content hash (with student pairs, the teachers' pairs too: `teacher_pref`)."""
    out = pipe.bundle.hashes()
    if pipe.student_pairs is not None:
        out["teacher_pref"] = pipe.bundle.split_hash("teacher_pref")
    return out


def manifest(pipe, cfg: RunConfig, mcfg, run: RunDir, result, identity: str) -> dict:
    return {
        "run_id": run.path.name, "identity": identity, "method": cfg.method, "student": cfg.student,
        "teacher": pipe.teacher, "dataset": cfg.dataset, "seed": cfg.seed, "preset": cfg.preset,
        "config": cfg.to_dict(), "method_settings": mcfg.to_dict(), "run_preset": pipe.preset,
        "versions": versions(), "data_hashes": data_hashes(pipe), "dataset_version": pipe.bundle.version,
        "model_identities": {"student": pipe.base_key(cfg.student), "teacher": pipe.base_key(pipe.teacher)},
        "suite_version": pipe.bundle.version if pipe.bundle.name == "embedded" else None,
        "git_commit": git_commit(), "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "truncation": pipe.enc.stats.to_dict(), "timings": {k: round(v, 2) for k, v in pipe.timings.items()},
        "selected_step": next((e["step"] for e in result.evals if e.get("selected")), result.steps),
        "validation": validation_record(pipe.preset.get("select_by"), result.evals),
        "student_path": "checkpoint", "teacher_path": pipe.built_path("dpo_teacher"),
        "cache_entries": used_entries(pipe, cfg),
        "student_pairs": pipe.student_pairs.summary() if pipe.student_pairs is not None else None,
    }


def validation_record(select_by: str | None, evals: list[dict]) -> dict | None:
    """The selected checkpoint's validation score (what tuning compares; never a test score), or None when the run
    validated nothing (select_by=last)."""
    best = next((e for e in evals if e.get("selected")), None)
    if best is None or not isinstance(best.get("score"), (int, float)):
        return None
    return {"by": select_by, "score": float(best["score"]), "step": best["step"]}


def used_entries(pipe, cfg: RunConfig) -> list[str]:
    """The cache entries this run used, directly or through their dependencies (relative to the cache root), and
    the `run:<method>` stage it publishes itself: what `bench cache ls|gc` count as used by it."""
    used = {s["path"] for s in closure(getattr(pipe, "used_entries", ()))}
    if not cfg.method_settings:
        used.add(cache_relative(stage_path("student_run", pipe.model_key(f"run:{cfg.method}"))))
    return sorted(p for p in used if not Path(p).is_absolute())


def adpa_reference_builder():
    """`bench eval --build-reference`: a builder of the ADPA student a run's AlpacaEval compares against (the same
    configuration as the run, method ADPA with its defaults)."""
    def build(manifest: dict, runs_dir: Path):
        cfg = RunConfig(**{**manifest["config"], "method": "adpa", "method_settings": {}, "run_name": None,
                           "runs_dir": str(runs_dir), "eval_suite": (), "resume": False})
        return run_pipeline(cfg).path

    return build

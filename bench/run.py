"""`bench run`: stages → training → checkpoint selection → generations → evaluation, into one run directory.

Run directory: manifest.json (config, versions, data hashes, seed, git commit, stage keys, timings),
metrics.json, generations.jsonl (greedy, test prompts), checkpoint/ (HF safetensors), train_log.json.
"""
from __future__ import annotations

import datetime as dt
import platform
import shutil
import subprocess
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from bench.config import RunConfig
from bench.errors import BenchError
from bench.generate import decode, make_generator
from bench.paths import REPO_ROOT
from bench.progress import console
from bench.rundir import RunDir, atomic_write_json, write_jsonl
from bench.stages import build_stage, content_key

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


def run_name(cfg: RunConfig) -> str:
    if cfg.run_name:
        return cfg.run_name
    key = content_key({"settings": cfg.method_settings, "overrides": cfg.stage_overrides, "preset": cfg.preset,
                       "teacher": cfg.teacher})[:8]
    safe = lambda s: str(s).replace("/", "_")  # noqa: E731
    return f"{cfg.method}-{safe(cfg.student)}-{safe(cfg.dataset)}-s{cfg.seed}-{key}"


def run_pipeline(cfg: RunConfig) -> RunDir:
    from bench.pipeline import Pipeline

    t0 = time.perf_counter()
    pipe = Pipeline(cfg)
    run = RunDir(Path(cfg.runs_dir) / run_name(cfg))
    if run.metrics_path.exists() and (run.checkpoint_path / "config.json").exists():
        console.print(f"[green]run {run.path} is complete; reusing it (delete it to retrain)")
    else:
        if run.path.exists() and not cfg.resume:
            shutil.rmtree(run.path)
        run.path.mkdir(parents=True, exist_ok=True)
        _train_and_write(pipe, cfg, run)
    if cfg.eval_suite:
        from bench.evaluators.run import run_evaluators

        run_evaluators([run.path], list(cfg.eval_suite), {}, None)
    console.print(f"[bold]{run.path}[/] done in {time.perf_counter() - t0:.0f}s")
    return run


def _train_and_write(pipe, cfg: RunConfig, run: RunDir) -> None:
    from bench.evaluators import EvalContext, get_evaluator

    final, result, mcfg = pipe.train_student(run.path / "work", resume=cfg.resume)
    tmp_ckpt = run.path / ".checkpoint.tmp"
    shutil.rmtree(tmp_ckpt, ignore_errors=True)
    shutil.copytree(final, tmp_ckpt)
    pipe.tok.save_pretrained(tmp_ckpt)
    shutil.rmtree(run.checkpoint_path, ignore_errors=True)
    tmp_ckpt.rename(run.checkpoint_path)
    shutil.rmtree(run.path / "work", ignore_errors=True)
    if not cfg.method_settings:  # a default-settings run can serve as `run:<method>` (e.g. ADPA+'s DCKD init)
        build_stage("student_run", pipe.model_key(f"run:{cfg.method}"),
                    lambda tmp: (shutil.copytree(run.checkpoint_path, tmp, dirs_exist_ok=True), {"from_run": str(run.path)})[1])

    t0 = time.perf_counter()
    from bench.models import load_model

    model = load_model(run.checkpoint_path)
    rows = pipe.split_rows("test")
    gen = make_generator(pipe.preset.get("generation", {}).get("backend", "hf"), model, pipe.tok,
                         batch_size=pipe.infer_bs)
    outs = gen.generate(pipe.prompts("test"), pipe.enc.max_response_len, desc="generate test")
    write_jsonl(run.generations_path, [{"id": r["id"], "prompt": r["prompt"], "response": decode(pipe.tok, o),
                                        "meta": r.get("meta", {})} for r, o in zip(rows, outs)])
    pipe.timings["generate:test"] = time.perf_counter() - t0
    atomic_write_json(run.path / "train_log.json", {"history": result.history, "evals": result.evals,
                                                    "seconds": result.seconds, "tokens_per_s": result.tokens_per_s})
    atomic_write_json(run.manifest_path, manifest(pipe, cfg, mcfg, run, result))
    ctx = EvalContext(settings={"model": model})
    metrics = {"train": {"steps": result.steps, "seconds": round(result.seconds, 2),
                         "tokens_per_s": round(result.tokens_per_s, 1),
                         "final_loss": result.history[-1]["loss"] if result.history else None}}
    for name in ("verified", "reward_accuracy"):
        try:
            ev = get_evaluator(name)
            metrics[name] = {"version": ev.version, **ev.evaluate(run, ctx)}
        except BenchError as e:
            console.print(f"[yellow]{name} skipped: {e}")
    atomic_write_json(run.metrics_path, metrics)


def manifest(pipe, cfg: RunConfig, mcfg, run: RunDir, result) -> dict:
    return {
        "run_id": run.path.name, "method": cfg.method, "student": cfg.student, "teacher": pipe.teacher,
        "dataset": cfg.dataset, "seed": cfg.seed, "preset": cfg.preset,
        "config": cfg.to_dict(), "method_settings": mcfg.to_dict(), "run_preset": pipe.preset,
        "versions": versions(), "data_hashes": pipe.bundle.hashes(), "dataset_version": pipe.bundle.version,
        "suite_version": pipe.bundle.version if pipe.bundle.name == "embedded" else None,
        "git_commit": git_commit(), "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "truncation": pipe.enc.stats.to_dict(), "timings": {k: round(v, 2) for k, v in pipe.timings.items()},
        "selected_step": next((e["step"] for e in result.evals if e.get("selected")), result.steps),
        "student_path": str(run.checkpoint_path.resolve()), "teacher_path": pipe.built_path("dpo_teacher"),
    }

"""`bench`: train a student with any registered method, evaluate it, compare every run in one table."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import List, Optional

import typer

from bench.errors import BenchError
from bench.store.commands import cache_du, cache_gc, cache_ls, cache_verify
from bench.store.files import atomic_write_text

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  rich_markup_mode=None,  # plain click help: wraps at any terminal width, never cuts an option
                  help="prefdistill-bench: preference distillation, trained and scored the way the papers do.")


def _fail(msg: str, code: int = 2):
    typer.echo(f"error: {msg}", err=True)
    raise typer.Exit(code)


def _version(value: bool):
    if value:
        from importlib.metadata import PackageNotFoundError, version

        from bench.runs.run import git_commit

        try:
            v = version("prefdistill-bench")
        except PackageNotFoundError:
            v = "unknown (not installed)"
        commit = git_commit()
        typer.echo(f"prefdistill-bench {v}" + (f" (git {commit[:12]})" if commit else ""))
        raise typer.Exit()


@app.callback()
def _main_options(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="print the version and exit"),
):
    """prefdistill-bench: preference distillation, trained and scored the way the papers do."""


@app.command(short_help="Train a student with one method.")
def run(
    method: str = typer.Option(..., "--method", "-m", help="method plugin name (see `bench methods`)"),
    student: Optional[str] = typer.Option(None, help="student preset, HF id or local path (default: the run "
                                          "preset's student: smollm2-135m-l12 for embedded, tiny-random-student "
                                          "for tiny)"),
    teacher: Optional[str] = typer.Option(None, help="teacher preset, HF id or local path (default: the preset's "
                                          "teacher, or the student's pair in configs/pairs.yaml)"),
    dataset: str = typer.Option("embedded", help="embedded | dpo-mix-7k | helpsteer2 | a .jsonl/.json/.parquet "
                                "file or folder of preference pairs | a hub dataset id org/name"),
    seed: int = typer.Option(0),
    preset: str = typer.Option("embedded", help="run preset in configs/runs (embedded, tiny, smoke, paper) or a "
                               "YAML path"),
    set_: List[str] = typer.Option([], "--set", help="key=value: a method setting (beta=0.1) or a run-preset key "
                                   "(student.train.lr=1e-5, sizes.pref_train=64, sft_dataset=FILE, "
                                   "select_by=reward_accuracy)"),
    runs: Path = typer.Option(Path("runs"), help="directory that holds run directories"),
    name: Optional[str] = typer.Option(None, help="run directory name (default: derived from the config)"),
    resume: bool = typer.Option(False, help="continue a killed run from its last saved state"),
    eval_: str = typer.Option("", "--eval", help="extra evaluators after training, comma-separated"),
    dry_run: bool = typer.Option(False, "--dry-run", help="print the resolved configuration and which stages are "
                                 "cached; build nothing"),
    report_to: str = typer.Option("none", "--report-to", help="experiment tracker of the training: none | "
                                  "tensorboard | wandb (train_log.jsonl is always written)"),
):
    """Run the pipeline stages, train the student, select the checkpoint, evaluate."""
    import dataclasses

    from bench.config import RunConfig, split_sets
    from bench.registry import get_method
    from bench.runs.run import interrupted_message, run_pipeline
    from bench.train.tracking import check_report_to

    m = get_method(method)

    method_settings, overrides = split_sets(set_, {f.name for f in dataclasses.fields(m.config_cls)})
    m.make_config(method_settings)  # validate before any work
    cfg = RunConfig(method=method, student=student, teacher=teacher, dataset=dataset, seed=seed, preset=preset,
                    method_settings=method_settings, stage_overrides=overrides, runs_dir=str(runs), run_name=name,
                    resume=resume, eval_suite=tuple(s for s in eval_.split(",") if s),
                    report_to=check_report_to(report_to))
    from bench.dist import cpu_launch_note

    if note := cpu_launch_note():
        typer.echo(note, err=True)
    if dry_run:
        from bench.runs.plan import dry_run as plan

        typer.echo("\n".join(plan(cfg)))
        return
    try:
        run_dir = run_pipeline(cfg)
    except KeyboardInterrupt as e:  # typer would turn it into a bare exit 130: say how to continue first
        if not getattr(e, "bench_reported", False):
            typer.echo(interrupted_message(cfg), err=True)
        raise typer.Exit(130)
    from bench import dist

    if dist.is_main():  # under accelerate launch: one summary line, from process 0
        metrics = run_dir.metrics
        summary = {k: round(v["score"], 4) for k, v in metrics.items() if isinstance(v, dict) and "score" in v}
        typer.echo(f"{run_dir.path} {json.dumps(summary)}")


@app.command(short_help="List method plugins.")
def methods(fmt: str = typer.Option("table", "--format", help="table | json | md (the method reference, "
                                     "docs/METHODS.md)"),
            output: Optional[Path] = typer.Option(None, "--output", "-o", help="also write the output to a file")):
    """List method plugins with their settings, defaults and the source of each default."""
    from bench.method import describe
    from bench.registry import get_method, method_names
    from bench.textout import terminal_width, wrap

    if fmt not in ("table", "json", "md"):
        _fail(f"--format {fmt!r} is invalid; use table, json or md")
    check_output_path("--output", output)
    infos = []
    for n in method_names():
        try:
            infos.append(describe(get_method(n)))
        except BenchError as e:  # one broken third-party plugin must not hide the others
            typer.echo(f"warning: {e}", err=True)
    if fmt == "json":
        text = json.dumps(infos, indent=2, default=str)
    elif fmt == "md":
        from bench.method_docs import methods_markdown

        text = methods_markdown(infos).rstrip("\n")
    else:  # one block per method: readable at any width (wrapped on a terminal, whole lines in a file)
        width = None if output else terminal_width()
        blocks = []
        for i in infos:
            lines = [wrap(f"{i['name']}  {i['display_name']}, {i['citation']}", 4, width),
                     wrap(f"  signals: {', '.join(i['signals']) or 'none'}", 4, width)]
            for st in i["settings"]:
                lines.append(wrap(f"  {st['name']}={st['default']}  ({st['source']})", 6, width))
            blocks.append("\n".join(lines))
        text = "\n\n".join(blocks)
    if output:
        atomic_write_text(output, text + "\n")
    typer.echo(text)


@app.command()
def leaderboard(
    runs: Path = typer.Option(Path("runs"), help="directory of run directories"),
    fmt: str = typer.Option("table", "--format", help="table | md | csv | json | latex | html"),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="write the table (any format) to a file"),
    baseline: Optional[str] = typer.Option(None, help="method to test every row against (paired, same items)"),
    cost: bool = typer.Option(False, "--cost", help="add cost columns (teacher passes, cache, memory, time)"),
    filter_: List[str] = typer.Option([], "--filter", help="key=value[,value]: method, student, teacher, dataset, "
                                      "preset, seed or settings (substring)"),
    sort: Optional[str] = typer.Option(None, help="sort by a metric or cost column (best first)"),
    per_run: bool = typer.Option(False, "--per-run", help="one row per run instead of per group of seeds"),
    plot: Optional[Path] = typer.Option(None, help="bar chart with 95% intervals (.png or .pdf)"),
    radar: Optional[Path] = typer.Option(None, help="MT-Bench per-category radar (.png or .pdf)"),
    sweep_plot: Optional[str] = typer.Option(None, help="plot a metric against this setting (e.g. beta)"),
    sweep_out: Optional[Path] = typer.Option(None, help="file of the --sweep-plot (default sweep-PARAM.png)"),
    sweep_metric: Optional[str] = typer.Option(None, help="metric of the --sweep-plot (default: the first shown)"),
    diagnostics: bool = typer.Option(False, "--diagnostics", help="what explains each score instead: reward margin, "
                                     "KL to the teacher, selected steps, verified % per task family"),
    tuned: bool = typer.Option(False, "--tuned", help="one row per method: the setting with the best validation "
                               "score at --tune-seed (a tuned `bench sweep`); without it every setting is a row"),
    tune_seed: int = typer.Option(0, "--tune-seed", help="the seed whose validation scores choose (--tuned)"),
):
    """One row per method and settings: mean over seeds with a 95% interval and the seed count. Reads run
    directories only."""
    from leaderboard.command import FORMATS, build_groups, show, write_plots

    if fmt not in FORMATS:
        _fail(f"--format {fmt!r} is invalid; use one of {', '.join(FORMATS)}")
    for opt, path in (("--output", output), ("--plot", plot), ("--radar", radar), ("--sweep-out", sweep_out)):
        check_output_path(opt, path)
    groups = build_groups(runs, baseline=baseline, filters=filter_, sort=sort, per_run=per_run,
                          tuned=tune_seed if tuned else None)
    if diagnostics and fmt not in ("table", "md"):
        _fail(f"--diagnostics prints a table or Markdown (--format table | md), not {fmt!r}")
    show(groups, fmt, output, cost=cost, baseline=baseline, diagnostics=diagnostics)
    if diagnostics:
        return
    for line in write_plots(groups, plot, radar, sweep_plot, sweep_out, sweep_metric):
        typer.echo(line, err=True)


@app.command()
def sweep(
    file: Optional[str] = typer.Argument(None, help="sweep file (YAML path or a name under configs/sweeps/)"),
    methods: Optional[str] = typer.Option(None, help="comma-separated methods, e.g. dpo,dckd,tvkd"),
    seeds: Optional[str] = typer.Option(None, help="comma-separated seeds, e.g. 0,1,2"),
    grid: List[str] = typer.Option([], help="key=v1,v2: a method setting or run-preset key to sweep"),
    set_: List[str] = typer.Option([], "--set", help="key=value fixed for every cell"),
    preset: Optional[str] = typer.Option(None, help="run preset (default: the file's, else embedded)"),
    student: Optional[str] = typer.Option(None), teacher: Optional[str] = typer.Option(None),
    dataset: Optional[str] = typer.Option(None),
    runs: Optional[Path] = typer.Option(None, help="directory of run directories (default runs)"),
    jobs: int = typer.Option(1, help="cells run in parallel processes (safe: stages and runs are locked)"),
    launcher: Optional[str] = typer.Option(None, help="run each cell as `LAUNCHER -m cli run ...`, e.g. "
                                           "\"accelerate launch --config_file configs/accelerate/multi_gpu.yaml\""),
    dry_run: bool = typer.Option(False, "--dry-run", help="list the cells and what each would build; run nothing"),
    tune_seed: Optional[int] = typer.Option(None, "--tune-seed", help="tune: the grid at this seed, then each "
                                            "method's best point by validation score at the other seeds"),
):
    """Run a grid of methods × settings × seeds; shared stages are built once, finished cells reused, failed cells
    recorded while the sweep goes on. Then `bench leaderboard` compares them (`--tuned`: the tuned points)."""
    from bench.runs.sweep import dry_run as plan_sweep
    from bench.runs.sweep import load_spec, parse_grid, parse_sets, run_sweep, summary_line

    spec = load_spec(file, methods=[m for m in (methods or "").split(",") if m],
                     seeds=[int(s) for s in (seeds or "").split(",") if s.strip()], grid=parse_grid(grid),
                     set=parse_sets(set_), preset=preset, student=student, teacher=teacher, dataset=dataset,
                     runs=str(runs) if runs else None, tune_seed=tune_seed)
    if dry_run:
        for cell in plan_sweep(spec):
            state = "finished: reused" if cell["finished"] else "to run"
            typer.echo(f"{cell['cell']}: {state} -> {cell['run']}")
            for st in cell["stages"]:
                typer.echo(f"    {st['status']:>10}  {st['stage']}")
        return
    record = run_sweep(spec, jobs=jobs, launcher=launcher)
    typer.echo(summary_line(record))
    for row in (record.get("tuning") or {}).get("grid", []):
        score = "no validation score" if row["validation"] is None else f"validation {row['validation']:.4f}"
        typer.echo(f"  {'*' if row['chosen'] else ' '} {row['method']} [{row['label']}] {score}")
    if any(c["status"] == "failed" for c in record["cells"]):
        raise typer.Exit(1)


@app.command(short_help="Make preference pairs: K samples per prompt from a policy, judged.")
def pairs(
    policy: str = typer.Option(..., help="the model that samples: a preset, an HF id or a local directory"),
    prompts: str = typer.Option("embedded", help="dataset whose prompts to use: embedded | a .jsonl/.json/.parquet "
                                "file or folder | a hub dataset id"),
    split: str = typer.Option("pref_train", help="which split's prompts: sft | pref_train | pref_val | test"),
    judge: str = typer.Option("verified", help="verified (the embedded suite's checker) | rm (a reward model)"),
    rm_model: str = typer.Option("embedded", "--rm-model", help="with --judge rm: fsfairx | embedded | an HF id | "
                                 "a local directory"),
    samples: int = typer.Option(4, "--samples", "-k", help="responses sampled per prompt (K >= 2)"),
    temperature: float = typer.Option(1.0, help="sampling temperature (> 0)"),
    noise: float = typer.Option(0.0, help="share of pairs whose verdict is swapped (an imperfect annotator), "
                                "in [0, 0.5)"),
    seed: int = typer.Option(0, help="sampling seed"),
    data_seed: int = typer.Option(0, "--data-seed", help="seed of the embedded suite's prompts (the run presets' "
                                  "data_seed)"),
    max_new_tokens: int = typer.Option(64, "--max-new-tokens"),
    limit: Optional[int] = typer.Option(None, help="use only the first N prompts of the split"),
    out: Path = typer.Option(..., "--out", "-o", help="JSONL file of preference pairs to write (usable as "
                             "`bench run --dataset FILE`)"),
    force: bool = typer.Option(False, help="replace --out if it exists"),
):
    """Turn a prompt set into on-policy preference pairs: both sides are the policy's samples, the label the
    judge's (best against worst; ties give no pair). Cached: the same policy, prompts and settings cost nothing."""
    from bench.pipeline.pairs import PairSpec, write_pairs

    spec = PairSpec(samples=samples, temperature=temperature, seed=seed, max_new_tokens=max_new_tokens,
                    judge=judge, rm_model=rm_model, noise=noise).validate()
    check_output_path("--out", out)
    if out.exists() and not force:
        _fail(f"--out {out} exists; pass --force to replace it, or another path")
    typer.echo(write_pairs(policy, prompts, split, spec, out, limit=limit, data_seed=data_seed))


@app.command(short_help="How a teacher's tokenization lines up with its student's, per split and family.")
def align(
    student: str = typer.Option(..., help="the student: a preset, an HF id or a local directory"),
    teacher: str = typer.Option(..., help="the teacher (another tokenizer): a preset, an HF id or a local directory"),
    dataset: str = typer.Option("embedded", help="embedded | a .jsonl/.json/.parquet file or folder | a hub id"),
    data_seed: int = typer.Option(0, "--data-seed", help="seed of the embedded suite"),
    limit: Optional[int] = typer.Option(None, help="use only the first N rows of each split"),
    fmt: str = typer.Option("table", "--format", help="table | json"),
):
    """Align the two tokenizations of every response by character offsets and print the share of student tokens
    on shared boundaries, in one-to-one spans, and spelled by one teacher token (docs/CROSS_TOKENIZER.md)."""
    from bench.pipeline.xtok import align_command

    typer.echo(align_command(student, teacher, dataset, data_seed, limit, fmt))


@app.command("serve-teacher", short_help="Serve a teacher's log-probs over TRL's get_sequence_logprobs protocol.")
def serve_teacher(
    model: str = typer.Argument(..., help="a preset, a local HF directory or an HF id"),
    host: str = typer.Option("127.0.0.1", help="interface to listen on (a network service: loopback by default)"),
    port: int = typer.Option(8000, help="TCP port (0: any free one)"),
    batch_size: int = typer.Option(8, help="sequences per forward pass"),
    max_sequences: int = typer.Option(64, help="most sequences one request may send"),
    max_tokens: int = typer.Option(32768, help="most tokens one request may send"),
    max_top_logprobs: int = typer.Option(100, help="largest k one request may ask for"),
):
    """Teacher-forced top-k and token log-probs of a local model for `--set teacher.server=URL` runs elsewhere;
    with BENCH_TEACHER_TOKEN set, requests need `Authorization: Bearer <token>` (docs/SCALING.md)."""
    from bench.signals.serve import Limits, serve_command

    if min(batch_size, max_sequences, max_tokens, max_top_logprobs) < 1 or not 0 <= port < 65536:
        _fail("--batch-size and the --max-* limits must be >= 1 and --port in [0, 65535]")
    serve_command(model, host, port, batch_size, Limits(max_sequences, max_tokens, max_top_logprobs), typer.echo)


def check_output_path(option: str, path: Optional[Path]) -> None:
    """An output file's folder must exist and the path must not be a folder (one error line otherwise)."""
    if path is None:
        return
    path = Path(path)
    if path.is_dir():
        _fail(f"{option} {path} is a directory; pass a file path")
    if not path.parent.is_dir():
        _fail(f"{option} {path}: folder {path.parent} does not exist; create it first or pass another path")


cache_app = typer.Typer(help="Inspect, check and clean the content-addressed cache ($BENCH_CACHE).",
                        no_args_is_help=True, rich_markup_mode=None)
app.add_typer(cache_app, name="cache", short_help="Inspect and clean the cache.")


cache_app.command("verify", short_help="Check every entry's checksums.")(cache_verify)
cache_app.command("ls", short_help="List entries and runs using them.")(cache_ls)
cache_app.command("du", short_help="Disk use by kind of entry.")(cache_du)
cache_app.command("gc", short_help="Delete entries no run uses.")(cache_gc)


@app.command("eval", short_help="Score runs with evaluators.")
def eval_(
    run_dirs: List[Path] = typer.Argument(..., help="run directories"),
    suite: str = typer.Option("verified,reward_accuracy", help="comma-separated evaluators"),
    judge_base_url: Optional[str] = typer.Option(None, help="OpenAI-compatible base URL of the judge"),
    judge_model: Optional[str] = typer.Option(None, help="judge model name"),
    build_reference: bool = typer.Option(False, help="alpacaeval: train the ADPA reference run if missing"),
    set_: List[str] = typer.Option([], "--set", help="evaluator setting key=value (e.g. oll_limit=20)"),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="also write the result table to a file"),
):
    """Score run directories with evaluators; prints a result table and stores each result in the run's
    metrics.json (which `bench leaderboard` reads)."""
    from bench.config import key_values, parse_value
    from bench.evaluators.run import run_evaluators
    from bench.textout import terminal_width

    settings = {k: parse_value(v) for k, v in key_values(set_)}
    if judge_base_url:
        settings["judge_base_url"] = judge_base_url
    if judge_model:
        settings["judge_model"] = judge_model
    if build_reference:
        from bench.runs.run import adpa_reference_builder

        settings["build_reference"] = adpa_reference_builder()
    check_output_path("--output", output)
    results = run_evaluators(run_dirs, [s for s in suite.split(",") if s], settings)
    from bench.evaluators.run import results_table

    text = results_table(results, width=None if output else terminal_width())
    if output:
        atomic_write_text(output, text + "\n")
    typer.echo(text)


def main():
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        app()
    except BenchError as e:
        typer.echo(f"error: {e}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:  # outside a command (typer handles it inside one; `bench run` says how to resume)
        typer.echo("interrupted", err=True)
        sys.exit(130)
    except OSError as e:  # disk full, permission denied, ... on a path the checks above could not foresee
        where = f" ({e.filename})" if getattr(e, "filename", None) else ""
        typer.echo(f"error: {e.strerror or e.__class__.__name__}{where}; free space or fix the permissions, then "
                   "rerun (finished stages and runs are kept)", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()

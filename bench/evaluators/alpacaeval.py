"""AlpacaEval win rate (``alpaca_eval.evaluate``) against the ADPA-trained student of the same pair and dataset.

Reference outputs: the seed papers compare against the ADPA student, not davinci-003. The reference run is found
among the sibling run directories (``runs_root``, default: the run's parent directory) by its manifest: method
``adpa`` and the same student, teacher and dataset (same seed preferred, then the newest). ``alpaca_reference_run``
names it explicitly. If there is none, the evaluation fails with the command that makes it, unless the settings hold
a ``build_reference`` callable (the CLI's ``--build-reference``), called as ``build_reference(manifest, runs_root)``
with this run's manifest and returning the new ADPA run's directory. Reference outputs
are always passed to alpaca_eval directly (its hub loader breaks on datasets>=4).

Instruction set (``alpaca_instructions``):
    ``auto``         (default) ``embedded`` for runs on the embedded dataset, else ``alpaca_eval``.
    ``alpaca_eval``  the 805 AlpacaEval instructions, ``alpaca_eval.json`` of the ``tatsu-lab/alpaca_eval`` hub
                     dataset read as a plain JSON file through ``huggingface_hub`` (works with datasets>=4; cached).
    ``embedded``     the dataset's test prompts: the run's own ``generations.jsonl`` rows (no new generation).
    PATH             a local JSON/JSONL list of ``{"instruction": ...}`` rows (or of strings).
For instruction sets other than ``embedded`` each run's checkpoint answers greedily (``alpaca_max_new_tokens``, else
``max_new_tokens``, else 1024 tokens), cached in that run's ``eval/alpaca_answers.jsonl``.

Judge: an alpaca_eval annotator config (``alpaca_annotator``: a name under alpaca_eval's ``evaluators_configs``, or
a path; default ``weighted_alpaca_eval_gpt4_turbo``; the TVKD paper used
``weighted_alpaca_eval_gpt-4o-mini-2024-07-18``), run by alpaca_eval itself. The config is copied to the cache with
the judge model (``alpaca_judge_model``, else ``judge_model``, else the config's own) and a client config that points
alpaca_eval's ``openai_completions`` at ``judge_base_url``; the key is read from ``judge_api_key_env`` at run time and
is never written. ``alpaca_fn_completions`` (a callable or an alpaca_eval decoder name) replaces the completion
function. Transport errors get the openai client's bounded retries with backoff (``judge_max_retries``,
``judge_timeout``), then a BenchError. Annotations are cached (alpaca_eval's own cache, written atomically) under
``<cache_dir>/judgments/alpacaeval/`` keyed by annotator and judge model, saved every ``alpaca_chunksize`` (16)
instructions; a rerun resumes. Unparseable judge outputs are kept as missing annotations (alpaca_eval's policy),
excluded from the win rate, counted in ``n_unparsed``, and reused on reruns (asked again when
``judge_retry_unparsed`` is true). Note: the ``weighted_*`` configs need
logprobs; a server without them (``transformers serve``) yields only unparsed annotations, which is an error.

Reported: ``win_rate`` (= ``score``, percent, draws count half), ``standard_error``, counts, and
``length_controlled_winrate`` only when valid: the full standard AlpacaEval set (805 instructions, no
``alpaca_max_instances``) and alpaca_eval's GLM data reachable; otherwise it is null with ``lc_note`` saying why.

The instruction sets and outputs live in :mod:`bench.evaluators.alpacaeval_instructions`, alpaca_eval's wrappers and
the annotator config in :mod:`bench.evaluators.alpacaeval_annotator`; their names are re-exported here.
"""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path

from bench.errors import BenchError
from bench.evaluators import Evaluator, register_evaluator
from bench.evaluators.alpacaeval_annotator import (  # noqa: F401 (re-exported)
    DEFAULT_ANNOTATOR,
    _alpaca_eval,
    _annotator_class,
    prepare_annotator,
    robust_winrate,
)
from bench.evaluators.alpacaeval_instructions import (  # noqa: F401 (re-exported)
    _embedded_outputs,
    _generated_outputs,
    _read_instruction_file,
    instruction_text,
    load_alpaca_eval_instructions,
    resolve_instruction_set,
)
from bench.store.rundir import RunDir

log = logging.getLogger(__name__)
ALPACA_EVAL_SIZE = 805
REFERENCE_METHOD = "adpa"


# ----------------------------------------------------------------------------------------------------------------
# the reference run
def find_reference_run(run: RunDir, settings: dict) -> RunDir:
    explicit = settings.get("alpaca_reference_run")
    if explicit:
        return RunDir.open(explicit)
    m = run.manifest
    student, teacher, dataset = m.get("student"), m.get("teacher"), m.get("dataset")
    if m.get("method") == REFERENCE_METHOD:
        return run
    root = Path(settings.get("runs_root") or run.path.parent)
    found = []
    if root.is_dir():
        for d in sorted(root.iterdir()):
            mp = d / "manifest.json"
            if not mp.is_file():
                continue
            try:
                other = json.loads(mp.read_text())
            except (OSError, json.JSONDecodeError):
                continue
            if (other.get("method") == REFERENCE_METHOD and other.get("student") == student
                    and other.get("teacher") == teacher and other.get("dataset") == dataset):
                found.append((other.get("seed") == m.get("seed"), str(other.get("created", "")), d))
    if found:
        found.sort(key=lambda t: (t[0], t[1]))
        return RunDir.open(found[-1][2])
    build = settings.get("build_reference")
    if callable(build):
        log.warning("no ADPA reference run for %s/%s/%s: building it", student, teacher, dataset)
        path = build(m, root)  # the CLI's --build-reference: build(manifest of this run, runs dir) -> new run dir
        return RunDir.open(path)
    raise BenchError(
        f"AlpacaEval compares against the ADPA-trained student of the same pair and dataset, but no ADPA run for "
        f"student={student} teacher={teacher} dataset={dataset} is under {root}; make it with `bench run --method adpa "
        f"--student {student} --teacher {teacher} --dataset {dataset}`, or pass --build-reference")


# ----------------------------------------------------------------------------------------------------------------
def _finite(x):
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


@register_evaluator
class AlpacaEvalEvaluator(Evaluator):
    name = "alpacaeval"
    version = "1"

    def evaluate(self, run, ctx) -> dict:
        import openai
        import pandas as pd

        from bench.evaluators.judge import translate_openai_error
        from bench.paths import cache_root
        from bench.scoring.runtime import int_setting

        settings = dict(ctx.settings or {})
        cache_dir = Path(ctx.cache_dir) if ctx.cache_dir else cache_root()
        ref = find_reference_run(run, settings)
        set_name, instructions = resolve_instruction_set(run, settings)
        max_instances = int_setting(settings, "alpaca_max_instances", None, minimum=1)

        if instructions is None:  # embedded: the test prompts both runs already answered
            mine, theirs = _embedded_outputs(run), _embedded_outputs(ref)
            ids = [i for i in mine if i in theirs]
            if not ids:
                raise BenchError(f"run {run.path.name} and its ADPA reference {ref.path.name} share no test prompt "
                                 "ids in generations.jsonl; were they made on the same dataset?")
            if max_instances:
                ids = ids[:max_instances]
            instr = [mine[i][0] for i in ids]
            model_out = [mine[i][1] for i in ids]
            ref_out = [theirs[i][1] for i in ids]
            dataset_col = [str(run.manifest.get("dataset", "embedded"))] * len(ids)
        else:
            if max_instances:
                instructions = instructions[:max_instances]
            instr = [r["instruction"] for r in instructions]
            model_out = _generated_outputs(run, instructions, settings)
            ref_out = model_out if ref.path == run.path else _generated_outputs(ref, instructions, settings)
            dataset_col = [r["dataset"] for r in instructions]
        if len(set(instr)) != len(instr):
            raise BenchError("the AlpacaEval instruction set has duplicate instructions (alpaca_eval merges outputs on "
                             "the instruction text); deduplicate it")
        full_standard = set_name == "alpaca_eval" and len(instr) == ALPACA_EVAL_SIZE

        name = str(run.manifest.get("run_id") or run.path.name)
        ref_name = str(ref.manifest.get("run_id") or ref.path.name)
        if ref_name == name:
            ref_name = name + " (reference)"
        model_df = pd.DataFrame({"instruction": instr, "output": model_out, "generator": name,
                                 "dataset": dataset_col})
        ref_df = pd.DataFrame({"instruction": instr, "output": ref_out, "generator": ref_name,
                               "dataset": dataset_col})

        ann = prepare_annotator(settings, cache_dir)
        main, _, _ = _alpaca_eval()
        out_dir = run.path / "eval" / "alpacaeval"
        out_dir.mkdir(parents=True, exist_ok=True)
        kwargs = {"caching_path": str(ann["caching_path"]),
                  "is_store_missing_annotations": not bool(settings.get("judge_retry_unparsed", False))}
        if ann["fn"] is not None:
            kwargs["fn_completions"] = ann["fn"]
        chunk = int_setting(settings, "alpaca_chunksize", 16, minimum=1)
        try:
            leaderboard, annotations = main.evaluate(
                model_outputs=model_df, reference_outputs=ref_df, annotators_config=str(ann["config"]), name=name,
                output_path=out_dir, precomputed_leaderboard=None, is_overwrite_leaderboard=True,
                is_return_instead_of_print=True, fn_metric=robust_winrate, sort_by="win_rate",
                is_cache_leaderboard=False, annotation_kwargs={"chunksize": chunk},
                Annotator=_annotator_class(), **kwargs)
        except openai.OpenAIError as e:
            raise translate_openai_error(e, ann["judge"], ann["judge"].max_retries + 1) from None

        df = pd.DataFrame(annotations if annotations is not None else [])
        prefs = pd.to_numeric(df["preference"], errors="coerce") if "preference" in df else pd.Series([], dtype=float)
        valid = prefs.between(1, 2)
        n_unparsed = int((~valid).sum())
        if not valid.any():
            raise BenchError(f"the AlpacaEval judge produced no usable annotation ({n_unparsed} unparsed; raw "
                             f"completions in {out_dir}/annotations.json); check alpaca_annotator/judge model "
                             "(the weighted_* configs need a server that returns logprobs)")
        row = leaderboard.loc[name].to_dict()
        result = {
            "score": _finite(row.get("win_rate")), "win_rate": _finite(row.get("win_rate")),
            "standard_error": _finite(row.get("standard_error")),
            "discrete_win_rate": _finite(row.get("discrete_win_rate")),
            "n_total": int(row.get("n_total", 0)), "n_wins": int(row.get("n_wins", 0)),
            "n_wins_base": int(row.get("n_wins_base", 0)), "n_draws": int(row.get("n_draws", 0)),
            "n_unparsed": n_unparsed, "n_instructions": len(instr), "avg_length": _finite(row.get("avg_length")),
            "instruction_set": set_name, "reference_run": ref_name, "reference_path": str(ref.path),
            "annotator": ann["name"], "judge_models": ann["models"],
            "judge_base_url": ann["judge"].describe()["base_url"],
            "length_controlled_winrate": None, "lc_standard_error": None,
            "partial": bool(max_instances),  # a subset of the instructions: marked, never bolded, in the leaderboard
        }
        if result["score"] is None:
            raise BenchError("alpaca_eval returned no finite win rate; see eval/alpacaeval/annotations.json")
        if full_standard and not max_instances:
            try:
                from alpaca_eval.metrics.glm_winrate import get_length_controlled_winrate

                lc = get_length_controlled_winrate(df.copy(), save_weights_dir=None)
                result["length_controlled_winrate"] = _finite(lc.get("length_controlled_winrate"))
                result["lc_standard_error"] = _finite(lc.get("lc_standard_error"))
            except Exception as e:  # noqa: BLE001 - LC needs hub data; report why it is missing
                result["lc_note"] = f"length-controlled win rate unavailable ({type(e).__name__})"
        else:
            result["lc_note"] = ("length-controlled win rate is only valid on the full standard AlpacaEval set "
                                 f"({ALPACA_EVAL_SIZE} instructions); this set is '{set_name}' with {len(instr)}")
        return result

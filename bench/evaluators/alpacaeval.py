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
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
from pathlib import Path

import yaml

from bench.errors import BenchError
from bench.evaluators import Evaluator, register_evaluator
from bench.rundir import RunDir, atomic_write_text

log = logging.getLogger(__name__)
DEFAULT_ANNOTATOR = "weighted_alpaca_eval_gpt4_turbo"
ALPACA_EVAL_SIZE = 805
REFERENCE_METHOD = "adpa"


def _alpaca_eval():
    root = logging.getLogger()
    level = root.level
    import alpaca_eval.constants as constants
    import alpaca_eval.main as main
    from alpaca_eval.annotators import PairwiseAnnotator

    root.setLevel(level)  # alpaca_eval sets the root logger to INFO on import
    return main, constants, PairwiseAnnotator


def _float_preferences(annotations):
    import pandas as pd

    df = pd.DataFrame(annotations) if not isinstance(annotations, pd.DataFrame) else annotations.copy()
    if "preference" in df:
        df["preference"] = pd.to_numeric(df["preference"], errors="coerce").astype(float)
    return df


def robust_winrate(annotations, **kwargs):
    """alpaca_eval's ``get_winrate`` on float preferences (missing -> NaN): with pandas>=3 an all-missing object
    column makes the original fail."""
    from alpaca_eval.metrics import get_winrate

    return get_winrate(_float_preferences(annotations), **kwargs)


def _annotator_class():
    _, _, PairwiseAnnotator = _alpaca_eval()

    class AtomicPairwiseAnnotator(PairwiseAnnotator):
        """alpaca_eval's PairwiseAnnotator whose annotation cache is written atomically (tmp file + rename) and read
        back with a float preference column (pandas>=3 refuses to put 1.5 into the int column read_json makes)."""

        def load_(self, path=None):
            super().load_(path)
            if self.df_annotations is not None and self.annotation_key in self.df_annotations:
                self.df_annotations = _float_preferences(self.df_annotations) if self.annotation_key == "preference" \
                    else self.df_annotations

        def save(self, path=None):
            path = path or self.caching_path
            if path is None:
                return
            self._refresh_annotations_()
            if not self.is_store_missing_annotations:
                self.df_annotations = self.df_annotations[~self.df_annotations[self.annotation_key].isna()]
            atomic_write_text(Path(path), self.df_annotations.to_json(orient="records", indent=2))

    return AtomicPairwiseAnnotator


# ----------------------------------------------------------------------------------------------------------------
# instructions and outputs
def instruction_text(messages) -> str:
    """An AlpacaEval instruction for a chat prompt: the user text of a single-turn prompt, else a role-tagged
    transcript."""
    if isinstance(messages, str):
        return messages
    if len(messages) == 1 and messages[0].get("role") == "user":
        return messages[0]["content"]
    return "\n\n".join(f"{m['role'].capitalize()}: {m['content']}" for m in messages)


def load_alpaca_eval_instructions() -> list[dict]:
    from bench.evaluators.mtbench import offline

    try:
        from huggingface_hub import hf_hub_download

        path = hf_hub_download(repo_id="tatsu-lab/alpaca_eval", filename="alpaca_eval.json", repo_type="dataset",
                               local_files_only=offline())
    except Exception as e:  # noqa: BLE001 - any hub failure means the same here
        raise BenchError(f"the AlpacaEval instructions (tatsu-lab/alpaca_eval, alpaca_eval.json) could not be loaded "
                         f"({type(e).__name__}; offline?); pass alpaca_instructions=PATH to a local copy, or "
                         "alpaca_instructions=embedded") from None
    return _read_instruction_file(Path(path))


def _read_instruction_file(path: Path) -> list[dict]:
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix == ".jsonl":
            rows = [json.loads(line) for line in text.splitlines() if line.strip()]
        else:
            rows = json.loads(text)
    except json.JSONDecodeError as e:
        raise BenchError(f"{path} is not valid JSON ({e.msg} at line {e.lineno}); give a JSON list of "
                         '{"instruction": ...} rows') from None
    if isinstance(rows, dict):
        rows = rows.get("instructions") or rows.get("data") or []
    out = []
    for i, row in enumerate(rows):
        if isinstance(row, str):
            row = {"instruction": row}
        if not isinstance(row, dict) or not isinstance(row.get("instruction"), str) or not row["instruction"].strip():
            raise BenchError(f"{path} row {i + 1}: needs a non-empty string 'instruction'")
        out.append({"instruction": row["instruction"], "dataset": row.get("dataset", path.stem)})
    if not out:
        raise BenchError(f"{path} has no instructions")
    return out


def resolve_instruction_set(run: RunDir, settings: dict) -> tuple[str, list[dict] | None]:
    """(set name, instructions or None for ``embedded``)."""
    choice = str(settings.get("alpaca_instructions") or "auto")
    if choice == "auto":
        choice = "embedded" if str(run.manifest.get("dataset", "")).lower() == "embedded" else "alpaca_eval"
    if choice == "embedded":
        return "embedded", None
    if choice == "alpaca_eval":
        return "alpaca_eval", load_alpaca_eval_instructions()
    path = Path(choice).expanduser()
    if not path.is_file():
        raise BenchError(f"alpaca_instructions={choice!r} is neither auto, alpaca_eval, embedded nor an existing "
                         "JSON/JSONL file")
    return str(path), _read_instruction_file(path)


def _embedded_outputs(run: RunDir) -> dict[str, tuple[str, str]]:
    """{row id: (instruction, response)} from generations.jsonl."""
    out = {}
    for i, row in enumerate(run.generations()):
        if "id" not in row or "prompt" not in row or not isinstance(row.get("response"), str):
            raise BenchError(f"{run.path}/generations.jsonl row {i + 1} lacks id/prompt/response; rerun `bench run`")
        out[str(row["id"])] = (instruction_text(row["prompt"]), row["response"])
    return out


def _generated_outputs(run: RunDir, instructions: list[dict], settings: dict) -> list[str]:
    from bench.evaluators.mtbench import generate_answers

    questions = [{"question_id": i, "turns": [row["instruction"]]} for i, row in enumerate(instructions)]
    answers = generate_answers(run, questions, 1, settings, "alpaca_answers.jsonl", default_max_new_tokens=1024,
                               max_tokens_key="alpaca_max_new_tokens")
    return [answers[i]["choices"][0]["turns"][0] for i in range(len(instructions))]


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
# the annotator config
def _annotator_source(name: str) -> tuple[Path, Path, str]:
    """(configs.yaml, directory prompt templates are relative to, annotator name)."""
    _, constants, _ = _alpaca_eval()
    path = Path(name).expanduser()
    if path.exists():
        cfg_file = path / "configs.yaml" if path.is_dir() else path
        if not cfg_file.is_file():
            raise BenchError(f"alpaca_annotator={name}: no configs.yaml there")
        return cfg_file, cfg_file.parent.parent, cfg_file.parent.name
    cfg_file = Path(constants.EVALUATORS_CONFIG_DIR) / name / "configs.yaml"
    if not cfg_file.is_file():
        raise BenchError(f"unknown alpaca_annotator '{name}'; use a config name from alpaca_eval's evaluators_configs "
                         f"(e.g. {DEFAULT_ANNOTATOR}, weighted_alpaca_eval_gpt-4o-mini-2024-07-18) or a path to one")
    return cfg_file, Path(constants.EVALUATORS_CONFIG_DIR), name


def prepare_annotator(settings: dict, cache_dir: Path) -> dict:
    """Write the effective annotator config (and client config) under the cache; return what evaluate needs."""
    from bench.evaluators.judge import JudgeConfig, slug

    name = str(settings.get("alpaca_annotator") or DEFAULT_ANNOTATOR)
    cfg_file, rel_dir, ann_name = _annotator_source(name)
    configs = yaml.safe_load(cfg_file.read_text())
    if not isinstance(configs, dict) or not configs:
        raise BenchError(f"{cfg_file} is not an alpaca_eval annotator config (a mapping of annotator name -> config)")
    fn = settings.get("alpaca_fn_completions") or settings.get("fn_completions")
    override = settings.get("alpaca_judge_model") or settings.get("judge_model")
    first = next(iter(configs.values()))
    default_model = str((first.get("completions_kwargs") or {}).get("model_name", "gpt-4-1106-preview"))
    judge = JudgeConfig.from_settings(settings, default_model=default_model, model_key="alpaca_judge_model")
    client_cfg = {"default": [{"client_class": "bench.evaluators.judge.EnvKeyOpenAI", "base_url": judge.base_url,
                               "api_key_env": judge.api_key_env, "timeout": judge.timeout,
                               "max_retries": judge.max_retries}]}
    client_text = yaml.safe_dump(client_cfg, sort_keys=True)
    client_digest = hashlib.sha256(client_text.encode()).hexdigest()[:16]
    client_path = cache_dir / "alpacaeval" / "client_configs" / f"{client_digest}.yaml"
    if not client_path.exists():
        atomic_write_text(client_path, client_text)
    models = []
    for ann, cfg in configs.items():
        cfg = dict(cfg)
        tmpl = cfg.get("prompt_template")
        if isinstance(tmpl, str) and (rel_dir / tmpl).is_file():
            cfg["prompt_template"] = str((rel_dir / tmpl).resolve())
        ck = dict(cfg.get("completions_kwargs") or {})
        if override:
            ck["model_name"] = str(override)
            ck.setdefault("requires_chatml", True)  # served chat models: always the chat endpoint
        if callable(fn):
            cfg.pop("fn_completions", None)
        else:
            if isinstance(fn, str) and fn:
                cfg["fn_completions"] = fn
            if cfg.get("fn_completions", "openai_completions") == "openai_completions":
                ck["client_config_path"] = str(client_path)
                ck.setdefault("num_procs", judge.workers)
        cfg["completions_kwargs"] = ck
        configs[ann] = cfg
        models.append(str(ck.get("model_name", "")))
    text = yaml.safe_dump(configs, sort_keys=True)
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    eff = cache_dir / "alpacaeval" / "annotators" / digest / ann_name / "configs.yaml"
    if not eff.exists():
        atomic_write_text(eff, text)
    model_key = "+".join(sorted(set(models))) + (f"+fn:{getattr(fn, '__name__', 'custom')}" if callable(fn) else "")
    caching = cache_dir / "judgments" / "alpacaeval" / f"{slug(ann_name + '__' + model_key, 80)}.json"
    caching.parent.mkdir(parents=True, exist_ok=True)
    return {"config": eff, "name": ann_name, "caching_path": caching, "judge": judge, "models": sorted(set(models)),
            "fn": fn if callable(fn) else None}


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
        from bench.evaluators.run import int_setting
        from bench.paths import cache_root

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

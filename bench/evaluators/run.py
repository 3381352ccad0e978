"""The evaluation harness: run evaluators over run directories, store results in metrics.json with secret-free
settings. What evaluators share with the scorers (settings, devices, loading, chat generation) is in
bench/scoring/runtime.py."""
from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from bench.errors import BenchError

# settings that mean the same to every evaluator (stored with each result)
_COMMON_KEYS = ("device", "dtype", "max_new_tokens", "gen_batch_size")
# evaluator name -> setting-name prefixes it reads (anything else is left out of its stored settings)
_PREFIXES = {
    "rm": ("rm_",),
    "mtbench": ("mtbench_", "judge_"),
    "alpacaeval": ("alpaca_", "judge_"),
    "oll": ("oll_", "include_path"),
    "value_kl": ("value_kl_",),
    "teacher_kl": ("teacher_kl_",),
}
_SECRET_PARTS = {"key", "apikey", "secret", "password", "passwd", "token", "credential", "credentials",
                 "authorization", "auth", "bearer"}


def is_secret_name(key: str) -> bool:
    """A setting name that may hold a secret (``api_key``, ``hf_token``...). ``*_env`` names only point at an
    environment variable and are kept."""
    key = str(key).lower()
    if key.endswith("_env"):
        return False
    return any(part in _SECRET_PARTS for part in re.split(r"[^a-z0-9]+", key))


# ----------------------------------------------------------------------------------------------------------------
# settings
def _jsonable(value: Any, scrub: bool = True) -> Any:
    """JSON-able copy: non-finite floats become None, paths strings, callables (and, with ``scrub``, secret-named
    keys) are dropped, numpy scalars become Python numbers."""
    if isinstance(value, (str, bool)) or value is None:
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v, scrub) for k, v in value.items()
                if not callable(v) and not (scrub and is_secret_name(k))}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, scrub) for v in value if not callable(v)]
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
        try:
            return _jsonable(value.item(), scrub)
        except (TypeError, ValueError):
            pass
    return repr(value)


def scrub_settings(settings: dict, evaluator: str | None = None) -> dict:
    """Settings fit for metrics.json: no secrets (a key named like ``*api_key*``/``*token*``... is dropped, except
    ``*_env`` which only names an environment variable), no callables, JSON-able values, and, for a built-in
    evaluator, only the keys it reads."""
    prefixes = _PREFIXES.get(evaluator or "")
    out = {}
    for key, value in (settings or {}).items():
        key = str(key)
        if callable(value) or is_secret_name(key):
            continue
        if prefixes is not None and key not in _COMMON_KEYS and not key.startswith(prefixes):
            continue
        if key == "judge_base_url" and isinstance(value, str):
            from bench.evaluators.judge import safe_url

            value = safe_url(value)
        out[key] = _jsonable(value)
    return out


# ----------------------------------------------------------------------------------------------------------------
# the harness
def _check_result(name: str, result: Any) -> dict:
    if not isinstance(result, dict):
        raise BenchError(f"evaluator '{name}' returned {type(result).__name__}, not a dict; fix the evaluator")
    score = result.get("score")
    if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(float(score)):
        raise BenchError(f"evaluator '{name}' returned no finite numeric 'score' (got {score!r}); fix the evaluator")
    return json.loads(json.dumps(_jsonable(result, scrub=False)))


def run_evaluators(run_dirs: list[str | Path], names: list[str], settings: dict,
                   cache_dir: str | Path | None = None) -> dict[str, dict]:
    """Evaluate each run with each evaluator; store ``{"version", "settings", **result}`` under the evaluator's
    name in the run's metrics.json (right after each evaluation, so finished ones survive a later failure).

    Returns ``{run_dir: {name: stored_entry}}``. A BenchError propagates (the CLI prints it)."""
    from bench.evaluators import EvalContext, get_evaluator
    from bench.paths import cache_root
    from bench.store.rundir import RunDir

    settings = dict(settings or {})
    if cache_dir is None:
        cache_dir = cache_root()
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    evaluators = [get_evaluator(n) for n in names]  # unknown names fail before any work
    runs = [RunDir.open(p) for p in run_dirs]
    out: dict[str, dict] = {}
    from bench.progress import progress_bar

    with progress_bar("evaluate", total=len(runs) * len(evaluators), unit="evaluations") as bar:
        for run in runs:
            per_run = out.setdefault(str(run.path), {})
            for ev in evaluators:
                ctx = EvalContext(settings=settings, cache_dir=str(cache_dir))
                result = _check_result(ev.name, ev.evaluate(run, ctx))
                entry = {"version": ev.version, "settings": scrub_settings(settings, ev.name), **result}
                run.update_metrics(ev.name, entry)
                per_run[ev.name] = entry
                bar.advance(1)
    return out


def results_table(results: dict[str, dict], width: int | None = None) -> str:
    """`bench eval`'s printed result: one line per (run, evaluator) with its headline score and sample count."""
    from bench.textout import table

    rows = []
    for run_dir, per_run in results.items():
        for name, entry in per_run.items():
            score = entry.get("score")
            n = entry.get("n", entry.get("n_questions", entry.get("n_prompts")))
            rows.append([Path(run_dir).name, name, f"{score:.4g}" if isinstance(score, (int, float)) else score,
                         n if isinstance(n, int) else None])
    return (table(["run", "evaluator", "score", "n"], rows, right=("score", "n"), width=width)
            + "\n(score as stored in each run's metrics.json: verified and reward_accuracy are fractions in [0, 1], "
              "rm the reward model's raw score, mtbench 1-10, alpacaeval and oll in %)")

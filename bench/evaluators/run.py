"""The evaluation harness: run evaluators over run directories, store results in metrics.json.

Also holds what several evaluators share: device choice, loading a run's checkpoint, batched greedy chat generation
and secret-free settings for metrics.
"""
from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Sequence
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


def setting(settings: dict, key: str, default: Any) -> Any:
    value = settings.get(key)
    return default if value is None else value


def int_setting(settings: dict, key: str, default: int | None, minimum: int = 0) -> int | None:
    value = settings.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool):
        raise BenchError(f"setting {key}={value!r} is not an integer; pass e.g. {key}={default}")
    try:
        ivalue = int(value)
        if ivalue != float(value):
            raise ValueError
    except (TypeError, ValueError):
        raise BenchError(f"setting {key}={value!r} is not an integer; pass e.g. {key}={default}") from None
    if ivalue < minimum:
        raise BenchError(f"setting {key}={value!r} must be >= {minimum}")
    return ivalue


def resolve_device(settings: dict) -> str:
    import torch

    device = str(settings.get("device") or "auto")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise BenchError(f"device={device} but no CUDA device is visible; use device=cpu")
    return device


def resolve_dtype(settings: dict, device: str):
    import torch

    name = str(settings.get("dtype") or "auto")
    if name == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    table = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if name not in table:
        raise BenchError(f"dtype={name!r} is not one of auto, {', '.join(table)}")
    return table[name]


# ----------------------------------------------------------------------------------------------------------------
# checkpoints and generation
def file_fingerprint(path: str | Path) -> str:
    """Content identity of a model directory or file (every file's digest, memoised by size and mtime)."""
    from bench.integrity import dir_content_hash, source_hash

    path = Path(path)
    if path.is_dir():
        return dir_content_hash(path)[:16]
    if path.is_file():
        return source_hash(path)[:16]
    return hashlib.sha256(str(path).encode()).hexdigest()[:16]  # a hub id: the name is all there is


def checkpoint_dir(run) -> Path:
    """The run's checkpoint folder, its files checked against the run's checksums before anything loads them."""
    path = run.checkpoint_path
    if not (path / "config.json").exists():
        raise BenchError(f"run {run.path} has no checkpoint/ (HF save_pretrained model); rerun `bench run` for it")
    run.verify(("checkpoint/",))
    return path


def load_causal_lm(path: str | Path, settings: dict):
    """(model, tokenizer, device) for a local HF directory, in eval mode, tokenizer padded on the left."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = resolve_device(settings)
    dtype = resolve_dtype(settings, device)
    try:
        tok = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    except OSError as e:
        raise BenchError(f"could not load the model in {path} ({type(e).__name__}); it must be an HF "
                         "save_pretrained directory with its tokenizer") from None
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    if not getattr(tok, "chat_template", None):
        raise BenchError(f"the tokenizer in {path} has no chat template; save the run's tokenizer with one")
    model.to(device).eval()
    return model, tok, device


def render_chat(tok, messages: list[dict]) -> str:
    return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def generate_chat(model, tok, conversations: Sequence[list[dict]], *, max_new_tokens: int, batch_size: int = 8,
                  device: str = "cpu", progress=None) -> list[str]:
    """Greedy replies to each conversation (chat template with the generation prompt), batched by length."""
    import torch

    texts = [render_chat(tok, conv) for conv in conversations]
    enc = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    order = sorted(range(len(texts)), key=lambda i: -len(enc[i]))
    out: list[str] = [""] * len(texts)
    eos = model.generation_config.eos_token_id if model.generation_config.eos_token_id is not None \
        else tok.eos_token_id
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        batch = tok.pad({"input_ids": [enc[i] for i in idx]}, padding=True, return_tensors="pt")
        batch = {k: v.to(device) for k, v in batch.items()}
        with torch.no_grad():
            gen = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                                 pad_token_id=tok.pad_token_id, eos_token_id=eos, temperature=None, top_p=None,
                                 top_k=None)
        new = gen[:, batch["input_ids"].shape[1]:]
        for row, i in enumerate(idx):
            out[i] = tok.decode(new[row], skip_special_tokens=True).strip()
        if progress:
            progress(len(idx))
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
    from bench.rundir import RunDir

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

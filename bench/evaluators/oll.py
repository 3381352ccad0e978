"""Open LLM Leaderboard v1 through ``lm_eval.simple_evaluate`` with an in-memory ``HFLM`` of the run's checkpoint.

Default tasks and shots (the v1 leaderboard): arc_challenge 25 (acc_norm), hellaswag 10 (acc_norm), truthfulqa_mc2 0
(acc), mmlu 5 (acc), winogrande 5 (acc), gsm8k 5 (exact_match, strict-match). Reported per task in percent, plus
their average (= ``score``). ``complete`` is true only for all six tasks without ``oll_limit``.

Settings:
    oll_tasks       ``oll_v1`` (default); ``embedded`` (the shipped offline tasks below); or a list / comma
                    string of task names with optional shots (``"arc_easy:0,my_task"``); or a mapping
                    name -> shots (None = the task's default).
    oll_limit       examples per task (int, or a fraction < 1) for quick looks; default all.
    include_path    a directory (or list) of user lm-eval task YAMLs.
    oll_batch_size  default 8.      oll_apply_chat_template   default false (v1 used plain prompts).
    oll_bootstrap_iters             default 1000 (only metrics without an analytic stderr use it).
    device, dtype   as elsewhere.

Shipped tasks (``bench/evaluators/lm_eval_tasks``, run offline): ``prefdistill_pref_mc`` (multiple choice: the
embedded suite's pref_val prompts, correct reply vs. its failure) and ``prefdistill_suite_gen`` (generate_until on the
suite's test prompts, scored by the suite checker). Their YAMLs use ``dataset_path: json``; the data files are written
at eval time from the embedded suite (seed 0, default sizes) under ``<cache_dir>/lm_eval_tasks/``.

Each task's result is cached in ``<run>/eval/oll/`` (keyed by task, shots, limit, options and checkpoint), so a rerun
only runs what is missing.
"""
from __future__ import annotations

import hashlib
import json
import math
import random
import shutil
from pathlib import Path

from bench.errors import BenchError
from bench.evaluators import Evaluator, register_evaluator
from bench.store.files import atomic_write_json, atomic_write_text, write_jsonl
from bench.store.stages import ensure_published

OLL_V1 = {
    "arc_challenge": (25, "acc_norm,none"),
    "hellaswag": (10, "acc_norm,none"),
    "truthfulqa_mc2": (0, "acc,none"),
    "mmlu": (5, "acc,none"),
    "winogrande": (5, "acc,none"),
    "gsm8k": (5, "exact_match,strict-match"),
}
EMBEDDED_TASKS = {
    "prefdistill_pref_mc": (0, "acc,none"),
    "prefdistill_suite_gen": (0, "suite_score,none"),
}
_PREFERRED = ("acc_norm,none", "acc,none", "exact_match,strict-match", "exact_match,none", "suite_score,none",
              "exact_match,flexible-extract")
TASKS_DIR = Path(__file__).parent / "lm_eval_tasks"
SUITE_SEED = 0


# ----------------------------------------------------------------------------------------------------------------
# the shipped embedded tasks
def embedded_task_rows(seed: int = SUITE_SEED) -> dict[str, list[dict]]:
    """Rows of the two shipped tasks from the embedded suite."""
    from bench.data.suite import build_suite

    suite = build_suite(seed=seed)
    mc = []
    for row in suite.split("pref_val"):
        rng = random.Random(f"prefdistill-mc/{row['id']}")
        choices = [row["chosen"], row["rejected"]]
        label = 0
        if rng.random() < 0.5:
            choices.reverse()
            label = 1
        mc.append({"id": row["id"], "prompt": _prompt_text(row["prompt"]), "choices": choices, "label": label})
    gen = [{"id": row["id"], "prompt": _prompt_text(row["prompt"]), "answer": str(row["meta"].get("answer", "")),
            "meta_json": json.dumps(row["meta"], sort_keys=True)} for row in suite.split("test")]
    return {"prefdistill_pref_mc": mc, "prefdistill_suite_gen": gen}


def _prompt_text(messages) -> str:
    return "\n\n".join(m["content"] for m in messages if m.get("role") != "assistant")


def materialize_embedded_tasks(root: str | Path, seed: int = SUITE_SEED) -> Path:
    """Write the shipped task YAMLs (data path filled in), their utils.py and data files under ``root``; return the
    task directory (an lm-eval ``include_path``)."""
    rows = embedded_task_rows(seed)
    h = hashlib.sha256()
    for name in sorted(rows):
        h.update(json.dumps(rows[name], sort_keys=True).encode())
    for f in sorted(TASKS_DIR.iterdir()):
        if f.suffix in (".yaml", ".py"):
            h.update(f.name.encode() + f.read_bytes())
    dest = Path(root) / "lm_eval_tasks" / f"embedded-{h.hexdigest()[:16]}"

    def build(tmp: Path) -> dict:
        for name, data in rows.items():
            write_jsonl(tmp / f"{name}.jsonl", data)
        for f in TASKS_DIR.iterdir():
            if f.suffix == ".yaml":
                atomic_write_text(tmp / f.name, f.read_text().replace("__DATA_DIR__", str(dest.resolve())))
            elif f.suffix == ".py":
                shutil.copyfile(f, tmp / f.name)
        return {"seed": seed}

    return ensure_published(dest, build, marker=".complete", what="lm-eval task folder")


# ----------------------------------------------------------------------------------------------------------------
# settings
def parse_tasks(spec) -> tuple[str, dict[str, tuple[int | None, str | None]]]:
    """(suite name, {task: (shots, primary metric or None)})."""
    if spec is None or spec in ("oll_v1", "open_llm_leaderboard", "oll"):
        return "oll_v1", dict(OLL_V1)
    if spec == "embedded":
        return "embedded", dict(EMBEDDED_TASKS)
    known = {**OLL_V1, **EMBEDDED_TASKS}
    out: dict[str, tuple[int | None, str | None]] = {}

    def add(name, shots):
        name = str(name).strip()
        if not name:
            return
        if shots is not None and (isinstance(shots, bool) or int(shots) < 0):
            raise BenchError(f"oll_tasks: shots for {name} must be a non-negative integer, got {shots!r}")
        default_shots, metric = known.get(name, (None, None))
        out[name] = (default_shots if shots is None else int(shots), metric)

    if isinstance(spec, dict):
        for name, shots in spec.items():
            add(name, shots)
    else:
        items = spec.split(",") if isinstance(spec, str) else list(spec)
        for item in items:
            if isinstance(item, dict):
                add(item.get("task"), item.get("num_fewshot"))
            elif ":" in str(item):
                name, shots = str(item).rsplit(":", 1)
                try:
                    add(name, int(shots))
                except ValueError:
                    raise BenchError(f"oll_tasks: '{item}' must be NAME or NAME:SHOTS") from None
            else:
                add(item, None)
    if not out:
        raise BenchError("oll_tasks is empty; use oll_v1, embedded, or task names like arc_easy:0")
    suite = "embedded" if set(out) <= set(EMBEDDED_TASKS) else "custom"
    if set(out) == set(OLL_V1) and all(out[t][0] == OLL_V1[t][0] for t in OLL_V1):
        suite = "oll_v1"
    return suite, out


def _limit(settings: dict):
    value = settings.get("oll_limit")
    if value is None:
        return None
    try:
        f = float(value)
    except (TypeError, ValueError):
        raise BenchError(f"oll_limit={value!r} must be a number (examples per task, or a fraction < 1)") from None
    if f <= 0:
        raise BenchError(f"oll_limit={value!r} must be > 0")
    return f if f < 1 else int(f)


def _include_paths(settings: dict) -> list[str]:
    inc = settings.get("include_path")
    if not inc:
        return []
    paths = inc if isinstance(inc, (list, tuple)) else [inc]
    out = []
    for p in paths:
        path = Path(str(p)).expanduser()
        if not path.is_dir():
            raise BenchError(f"include_path {path} is not a directory of lm-eval task YAMLs")
        out.append(str(path.resolve()))
    return out


def primary_metric(task_result: dict, preferred: str | None) -> str | None:
    if preferred and isinstance(task_result.get(preferred), (int, float)):
        return preferred
    for m in _PREFERRED:
        if isinstance(task_result.get(m), (int, float)):
            return m
    for k, v in task_result.items():
        if "," in k and "stderr" not in k and isinstance(v, (int, float)) and not isinstance(v, bool):
            return k
    return None


def _is_data_access_error(err: BaseException) -> bool:
    if isinstance(err, (ConnectionError, OSError)):
        return True
    mod = type(err).__module__ or ""
    return mod.startswith(("datasets", "huggingface_hub", "requests", "urllib3", "httpx"))


# ----------------------------------------------------------------------------------------------------------------
@register_evaluator
class OLLEvaluator(Evaluator):
    name = "oll"
    version = "1"

    def evaluate(self, run, ctx) -> dict:
        import lm_eval
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager

        from bench.paths import cache_root
        from bench.scoring.runtime import checkpoint_dir, file_fingerprint, int_setting, load_causal_lm

        settings = dict(ctx.settings or {})
        cache_dir = Path(ctx.cache_dir) if ctx.cache_dir else cache_root()
        suite, tasks = parse_tasks(settings.get("oll_tasks"))
        limit = _limit(settings)
        batch_size = int_setting(settings, "oll_batch_size", 8, minimum=1)
        chat = bool(settings.get("oll_apply_chat_template", False))
        boot = int_setting(settings, "oll_bootstrap_iters", 1000)
        include = [str(materialize_embedded_tasks(cache_dir))] + _include_paths(settings)

        ckpt = checkpoint_dir(run)
        fp = file_fingerprint(ckpt)
        user_tasks = hashlib.sha256()
        for d in include[1:]:  # user task definitions are part of the cache key
            for f in sorted(Path(d).rglob("*")):
                if f.is_file() and f.suffix in (".yaml", ".yml", ".py", ".json", ".jsonl"):
                    user_tasks.update(str(f).encode() + f.read_bytes())
        out_dir = run.path / "eval" / "oll"
        task_results: dict[str, dict] = {}
        todo = {}
        for name, (shots, metric) in tasks.items():
            key = hashlib.sha256(json.dumps({"task": name, "shots": shots, "limit": limit, "chat": chat, "ckpt": fp,
                                             "include": user_tasks.hexdigest(), "lm_eval": lm_eval.__version__},
                                            sort_keys=True).encode()).hexdigest()[:16]
            path = out_dir / f"{name}-{key}.json"
            if path.exists():
                task_results[name] = json.loads(path.read_text())
            else:
                todo[name] = (shots, metric, path)

        if todo:
            tm = TaskManager(include_path=include, include_defaults=False)
            if any(name not in tm.all_tasks for name in todo):
                tm = TaskManager(include_path=include, include_defaults=True)
            missing = [n for n in todo if n not in tm.all_tasks]
            if missing:
                raise BenchError(f"unknown lm-eval task(s): {', '.join(missing)}; check the names, or add their "
                                 "YAML directory with include_path")
            model, tok, device = load_causal_lm(ckpt, settings)
            tok.padding_side = "left"
            lm = HFLM(pretrained=model, tokenizer=tok, batch_size=batch_size, device=device)
            for name, (shots, metric, path) in todo.items():
                try:
                    res = lm_eval.simple_evaluate(
                        model=lm, tasks=[name], num_fewshot=shots, limit=limit, task_manager=tm,
                        log_samples=False, bootstrap_iters=boot, apply_chat_template=chat,
                        fewshot_as_multiturn=chat, confirm_run_unsafe_code=False)
                except BenchError:
                    raise
                except Exception as e:  # noqa: BLE001 - data access failures get a clear message
                    if _is_data_access_error(e):
                        raise BenchError(f"oll task {name} could not load its data ({type(e).__name__}: "
                                         f"{str(e)[:160]}); standard tasks download from the hub: run once online, "
                                         "or use oll_tasks=embedded / your own tasks via include_path") from None
                    raise
                if res is None:
                    raise BenchError(f"lm_eval returned no result for {name}")
                block = (res.get("groups") or {}).get(name) or res["results"].get(name)
                if block is None:
                    raise BenchError(f"lm_eval result has no entry for task {name}")
                m = primary_metric(block, metric)
                if m is None:
                    raise BenchError(f"task {name} reported no numeric metric; check its metric_list")
                value = float(block[m])
                stderr_key = m.replace(",", "_stderr,", 1)
                stderr = block.get(stderr_key)
                n = (res.get("n-samples") or {}).get(name, {})
                ok_stderr = isinstance(stderr, (int, float)) and math.isfinite(stderr)
                entry = {"score": value * 100, "metric": m, "num_fewshot": shots,
                         "stderr": float(stderr) * 100 if ok_stderr else None,
                         "n": n.get("effective") if isinstance(n, dict) else None,
                         "raw": {k: v for k, v in block.items() if isinstance(v, (int, float, str)) and k != "alias"}}
                atomic_write_json(path, entry)
                task_results[name] = entry

        scores = [task_results[n]["score"] for n in tasks]
        avg = sum(scores) / len(scores)
        return {
            "score": avg, "average": avg, "suite": suite,
            "tasks": {n: task_results[n] for n in tasks},
            "limit": limit, "apply_chat_template": chat,
            "complete": suite == "oll_v1" and limit is None,
            "partial": limit is not None,
        }

"""MT-Bench single-answer grading (FastChat's ``llm_judge`` protocol) with any OpenAI-compatible judge.

What follows FastChat (``fschat``): questions, judge prompts and reference answers are read with
``fastchat.llm_judge.common.load_questions`` / ``load_judge_prompts``; judges are ``Judge`` objects for the prompts
``single-v1`` and ``single-math-v1`` (reference-based, for the categories in ``NEED_REF_CATS``: math, reasoning,
coding) and, for the second turn, ``single-v1-multi-turn`` / ``single-math-v1-multi-turn``; matches come from
``gen_judgment.make_match_single``; the judge prompt is formatted exactly as ``run_judge_single`` does and sent as
the OpenAI chat conversation (system prompt + user prompt) at temperature 0 with at most 2048 new tokens; the rating
is parsed from ``[[n]]`` (FastChat's backup pattern ``[n]`` too). FastChat's own judge call uses the pre-1.0 openai
API, so the call itself goes through :mod:`bench.evaluators.judge` (openai>=1).

Modes (``mtbench_mode``):
    ``single``    the TVKD protocol: only the first turn is answered and judged; score = mean turn-1 rating.
    ``two_turn``  the ADPA protocol: both turns answered (turn 2 sees the model's own turn-1 answer) and judged;
                  score = mean over all ratings of both turns (FastChat's ``show_result`` average).

Answers: the run's checkpoint answers the questions greedily (chat template, batched), cached in the run directory
(``eval/mtbench_answers.jsonl``, FastChat's model-answer schema).

Malformed judge output: asked again up to ``judge_parse_retries`` times; then recorded with ``score: null`` and the raw
text, excluded from every mean, and counted in ``n_unparsed``. A rating outside 1-10 counts as unparsed. If no
judgment parses at all the evaluation fails with a BenchError (there is no score to report).

Files (never copied into the repo): ``mtbench_questions`` (question.jsonl: question_id, category, turns),
``mtbench_judge_prompts`` (judge_prompts.jsonl: name, type, system_prompt, prompt_template, description, category,
output_format), ``mtbench_references`` (reference answers: question_id, choices[0].turns). Any not given is fetched
once from FastChat's public repository and cached under ``<cache_dir>/mtbench/`` (unless offline:
``BENCH_OFFLINE=1`` or ``HF_HUB_OFFLINE=1``).

Other settings: ``mtbench_judge_model`` (else ``judge_model``, else ``gpt-4``), the shared ``judge_*`` settings,
``mtbench_max_new_tokens`` (else ``max_new_tokens``, else 1024, FastChat's default), ``mtbench_limit`` (first N
questions, for quick looks), ``gen_batch_size``, ``device``, ``dtype``.
"""
from __future__ import annotations

import ast
import hashlib
import json
import re
import time
import urllib.request
from pathlib import Path

from bench.errors import BenchError
from bench.evaluators import Evaluator, register_evaluator
from bench.modeling.hub import offline_by_env
from bench.store.files import atomic_write_text, read_jsonl, write_jsonl

FASTCHAT_DATA = "https://raw.githubusercontent.com/lm-sys/FastChat/main/fastchat/llm_judge/data"
SOURCES = {
    "questions": (f"{FASTCHAT_DATA}/mt_bench/question.jsonl", "question.jsonl"),
    "judge_prompts": (f"{FASTCHAT_DATA}/judge_prompts.jsonl", "judge_prompts.jsonl"),
    "references": (f"{FASTCHAT_DATA}/mt_bench/reference_answer/gpt-4.jsonl", "reference_answer_gpt-4.jsonl"),
}
SETTING_FOR = {"questions": "mtbench_questions", "judge_prompts": "mtbench_judge_prompts",
               "references": "mtbench_references"}
MODES = {"single": 1, "two_turn": 2}
DEFAULT_JUDGE = "gpt-4"
JUDGE_MAX_TOKENS = 2048  # FastChat's run_judge_single


def fastchat_judge_modules():
    """(fastchat.llm_judge.common, fastchat.llm_judge.gen_judgment, get_conversation_template)."""
    try:
        import fastchat.llm_judge.common as common
        import fastchat.llm_judge.gen_judgment as gen_judgment
        from fastchat.model.model_adapter import get_conversation_template
    except ModuleNotFoundError as e:
        raise BenchError(f"MT-Bench needs fschat's llm_judge, which failed to import (missing module '{e.name}'); "
                         f"run `pip install 'fschat>=0.2.36' {e.name or ''}`") from None
    return common, gen_judgment, get_conversation_template


def fetch_cached(url: str, dest: Path, what: str, fix: str) -> Path:
    """``dest`` if present, else download ``url`` to it (atomically). BenchError naming ``fix`` when that fails."""
    if dest.exists():
        return dest
    if offline_by_env():
        raise BenchError(f"{what} not found locally and this machine is offline (BENCH_OFFLINE/HF_HUB_OFFLINE); {fix}")
    try:
        with urllib.request.urlopen(url, timeout=30) as resp:
            data = resp.read().decode("utf-8")
    except Exception as e:  # noqa: BLE001 - any network failure means the same to the user
        raise BenchError(f"{what} not found locally and could not be fetched from {url} ({type(e).__name__}); "
                         f"{fix}") from None
    atomic_write_text(dest, data)
    return dest


def resolve_file(kind: str, settings: dict, cache_dir: str | Path) -> Path:
    key = SETTING_FOR[kind]
    given = settings.get(key)
    if given:
        path = Path(str(given)).expanduser()
        if not path.is_file():
            raise BenchError(f"{key}={path} does not exist; pass the MT-Bench {kind.replace('_', ' ')} file "
                             "(FastChat's fastchat/llm_judge/data)")
        return path
    url, name = SOURCES[kind]
    fix = (f"pass {key}=PATH (from FastChat's fastchat/llm_judge/data), or run once online so it is cached in "
           f"{Path(cache_dir) / 'mtbench'}")
    return fetch_cached(url, Path(cache_dir) / "mtbench" / name, f"MT-Bench {kind.replace('_', ' ')}", fix)


def _validate_questions(questions: list, path: Path) -> None:
    if not questions:
        raise BenchError(f"{path} has no questions; give an MT-Bench question.jsonl")
    seen = set()
    for i, q in enumerate(questions):
        ok = (isinstance(q, dict) and "question_id" in q and isinstance(q.get("category"), str)
              and isinstance(q.get("turns"), list) and q["turns"] and all(isinstance(t, str) for t in q["turns"]))
        if not ok:
            raise BenchError(f"{path} line {i + 1}: an MT-Bench question needs question_id, category and a non-empty "
                             "list of string turns")
        if q["question_id"] in seen:
            raise BenchError(f"{path} line {i + 1}: duplicate question_id {q['question_id']!r}")
        seen.add(q["question_id"])


def _validate_prompts(prompts: dict, names: list[str], path: Path) -> None:
    for name in names:
        p = prompts.get(name)
        if p is None:
            raise BenchError(f"{path} has no judge prompt named '{name}'; an MT-Bench judge_prompts.jsonl needs "
                             f"{', '.join(names)}")
        for field in ("system_prompt", "prompt_template", "output_format", "type"):
            if not isinstance(p.get(field), str):
                raise BenchError(f"{path}: judge prompt '{name}' lacks the string field '{field}'")
        if p["type"] != "single" or p["output_format"] != "[[rating]]":
            raise BenchError(f"{path}: judge prompt '{name}' must be type 'single' with output_format '[[rating]]' "
                             f"for single-answer grading (got {p['type']!r}, {p['output_format']!r})")


def parse_rating(text: str) -> float | None:
    """FastChat's rating parser (``[[n]]``, else ``[n]``); None if absent or outside 1-10."""
    common, _, _ = fastchat_judge_modules()
    match = re.search(common.one_score_pattern, text or "") or re.search(common.one_score_pattern_backup, text or "")
    if not match:
        return None
    try:
        rating = float(ast.literal_eval(match.groups()[0]))
    except (ValueError, SyntaxError):
        return None
    return rating if 1.0 <= rating <= 10.0 else None


def judge_user_prompt(match) -> str:
    """The user prompt of a single-answer match, formatted exactly as FastChat's ``run_judge_single``."""
    question, answer, judge, ref_answer = match.question, match.answer, match.judge, match.ref_answer
    kwargs = {}
    if ref_answer is not None:
        kwargs["ref_answer_1"] = ref_answer["choices"][0]["turns"][0]
        if match.multi_turn:
            kwargs["ref_answer_2"] = ref_answer["choices"][0]["turns"][1]
    try:
        if match.multi_turn:
            return judge.prompt_template["prompt_template"].format(
                question_1=question["turns"][0], question_2=question["turns"][1],
                answer_1=answer["choices"][0]["turns"][0], answer_2=answer["choices"][0]["turns"][1], **kwargs)
        return judge.prompt_template["prompt_template"].format(
            question=question["turns"][0], answer=answer["choices"][0]["turns"][0], **kwargs)
    except (KeyError, IndexError) as e:
        raise BenchError(f"judge prompt '{judge.prompt_template.get('name')}' uses a field that question "
                         f"{question['question_id']} cannot fill ({e}); check the judge prompts and "
                         "references") from None


def judge_messages(match) -> list[dict]:
    """(system, user) messages as FastChat builds them for an OpenAI judge (its ``chatgpt`` template)."""
    _, _, get_conversation_template = fastchat_judge_modules()
    conv = get_conversation_template("gpt-4")
    conv.set_system_message(match.judge.prompt_template["system_prompt"])
    conv.append_message(conv.roles[0], judge_user_prompt(match))
    conv.append_message(conv.roles[1], None)
    return conv.to_openai_api_messages()


# ----------------------------------------------------------------------------------------------------------------
# answers
def _answer_key(question: dict, max_new_tokens: int, ckpt_fp: str) -> str:
    blob = json.dumps({"turns": question["turns"], "max_new_tokens": max_new_tokens, "ckpt": ckpt_fp},
                      sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def generate_answers(run, questions: list[dict], n_turns: int, settings: dict, cache_name: str,
                     default_max_new_tokens: int = 1024, max_tokens_key: str = "mtbench_max_new_tokens") -> dict:
    """{question_id: FastChat model-answer row} with ``n_turns`` (or all the question has) greedy turns, generated
    by the run's checkpoint and cached in ``<run>/eval/<cache_name>``."""
    from bench.scoring.runtime import checkpoint_dir, file_fingerprint, generate_chat, int_setting, load_causal_lm

    ckpt = checkpoint_dir(run)
    fp = file_fingerprint(ckpt)
    max_new = int_setting(settings, max_tokens_key, None, minimum=1) or \
        int_setting(settings, "max_new_tokens", default_max_new_tokens, minimum=1)
    batch_size = int_setting(settings, "gen_batch_size", 8, minimum=1)
    path = run.path / "eval" / cache_name
    cached = {}
    if path.exists():
        for row in read_jsonl(path):
            cached[row.get("bench_key")] = row
    model_id = str(run.manifest.get("run_id") or run.path.name)
    rows = {}
    for q in questions:
        key = _answer_key(q, max_new, fp)
        row = cached.get(key)
        if row is None:
            row = {"question_id": q["question_id"], "answer_id": key, "model_id": model_id,
                   "choices": [{"index": 0, "turns": []}], "tstamp": time.time(), "bench_key": key,
                   "max_new_tokens": max_new}
        rows[q["question_id"]] = row
    loaded = None
    for turn in range(n_turns):
        need = [q for q in questions
                if len(q["turns"]) > turn and len(rows[q["question_id"]]["choices"][0]["turns"]) == turn]
        if not need:
            continue
        if loaded is None:
            loaded = load_causal_lm(ckpt, settings)
        model, tok, device = loaded
        convs = []
        for q in need:
            prior = rows[q["question_id"]]["choices"][0]["turns"]
            conv = []
            for t in range(turn):
                conv += [{"role": "user", "content": q["turns"][t]}, {"role": "assistant", "content": prior[t]}]
            conv.append({"role": "user", "content": q["turns"][turn]})
            convs.append(conv)
        outs = generate_chat(model, tok, convs, max_new_tokens=max_new, batch_size=batch_size, device=device)
        for q, out in zip(need, outs):
            rows[q["question_id"]]["choices"][0]["turns"].append(out)
        # keep cached rows of other question sets too
        merged = {**cached, **{r["bench_key"]: r for r in rows.values()}}
        write_jsonl(path, list(merged.values()))
    return rows


# ----------------------------------------------------------------------------------------------------------------
def _mean(xs):
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


@register_evaluator
class MTBenchEvaluator(Evaluator):
    name = "mtbench"
    version = "1"

    def evaluate(self, run, ctx) -> dict:
        from bench.evaluators.judge import JudgeClient, JudgeConfig, JudgeRequest
        from bench.paths import cache_root
        from bench.scoring.runtime import int_setting

        common, gen_judgment, _ = fastchat_judge_modules()
        settings = dict(ctx.settings or {})
        cache_dir = Path(ctx.cache_dir) if ctx.cache_dir else cache_root()
        mode = str(settings.get("mtbench_mode") or "single").replace("-", "_")
        if mode not in MODES:
            raise BenchError(f"mtbench_mode={mode!r}; use 'single' (TVKD: first turn) or 'two_turn' (ADPA)")
        n_turns = MODES[mode]
        cfg = JudgeConfig.from_settings(settings, default_model=DEFAULT_JUDGE, model_key="mtbench_judge_model",
                                        default_max_tokens=JUDGE_MAX_TOKENS)

        qpath = resolve_file("questions", settings, cache_dir)
        questions = common.load_questions(str(qpath), None, None)
        _validate_questions(questions, qpath)
        limit = int_setting(settings, "mtbench_limit", None, minimum=1)
        if limit:
            questions = questions[:limit]
        ppath = resolve_file("judge_prompts", settings, cache_dir)
        prompts = common.load_judge_prompts(str(ppath))
        names = ["single-v1", "single-math-v1"] + (["single-v1-multi-turn", "single-math-v1-multi-turn"]
                                                   if n_turns == 2 else [])
        needs_ref = [q for q in questions if q["category"] in common.NEED_REF_CATS]
        if not needs_ref:
            names = [n for n in names if "math" not in n]
        _validate_prompts(prompts, names, ppath)

        refs = {}
        if needs_ref:
            rpath = resolve_file("references", settings, cache_dir)
            for row in common.load_questions(str(rpath), None, None):
                refs[row.get("question_id")] = row
            for q in needs_ref:
                ref = refs.get(q["question_id"])
                want = n_turns if len(q["turns"]) >= n_turns else 1
                if ref is None or len(ref.get("choices", [{}])[0].get("turns", [])) < want:
                    raise BenchError(f"{rpath} has no reference answer ({want} turn(s)) for question "
                                     f"{q['question_id']} (category {q['category']}, which needs one); pass the "
                                     "matching mtbench_references file")

        answers = generate_answers(run, questions, n_turns, settings, "mtbench_answers.jsonl")
        model_id = str(run.manifest.get("run_id") or run.path.name)
        model_answers = {model_id: answers}

        judges = {"default": common.Judge(cfg.model, prompts["single-v1"])}
        if needs_ref:
            judges["math"] = common.Judge(cfg.model, prompts["single-math-v1"], ref_based=True)
        if n_turns == 2:
            judges["default-mt"] = common.Judge(cfg.model, prompts["single-v1-multi-turn"], multi_turn=True)
            if needs_ref:
                judges["math-mt"] = common.Judge(cfg.model, prompts["single-math-v1-multi-turn"], ref_based=True,
                                                 multi_turn=True)
        q_default = [q for q in questions if q["category"] not in common.NEED_REF_CATS]
        ref_answers = {cfg.model: refs}
        matches = []
        matches += gen_judgment.make_match_single(q_default, [model_id], model_answers, judges["default"])
        if needs_ref:
            matches += gen_judgment.make_match_single(needs_ref, [model_id], model_answers, judges["math"],
                                                      ref_answers=ref_answers)
        if n_turns == 2:
            matches += gen_judgment.make_match_single(q_default, [model_id], model_answers, judges["default-mt"],
                                                      multi_turn=True)
            if needs_ref:
                matches += gen_judgment.make_match_single(needs_ref, [model_id], model_answers, judges["math-mt"],
                                                          ref_answers=ref_answers, multi_turn=True)

        requests = [JudgeRequest(messages=judge_messages(m), tag=f"mtbench/{m.judge.prompt_template['name']}",
                                 meta={"match": m}) for m in matches]
        client = JudgeClient(cfg, cache_dir)
        results = client.judge_many(requests, parse_rating)

        records = []
        for res in results:
            m = res["meta"]["match"]
            records.append({
                "question_id": m.question["question_id"], "category": m.question["category"], "model": model_id,
                "judge": [cfg.model, m.judge.prompt_template["name"]], "turn": 2 if m.multi_turn else 1,
                "user_prompt": judge_user_prompt(m), "judgment": res["raw"], "score": res["parsed"],
                "attempts": res["attempts"], "cached": res["cached"], "tstamp": res["tstamp"],
            })
        write_jsonl(run.path / "eval" / f"mtbench_judgments_{mode}.jsonl", records)

        parsed = [r for r in records if r["score"] is not None]
        if not parsed:
            raise BenchError(f"the MT-Bench judge '{cfg.model}' gave no parseable [[rating]] in {len(records)} "
                             "judgment(s) (see eval/mtbench_judgments_*.jsonl); unparsed judgments are cached and "
                             "reused, so rerun with --set judge_retry_unparsed=true to ask again, or use a stronger "
                             "judge_model / check the judge prompts")
        categories = {}
        for cat in sorted({r["category"] for r in records}):
            mean = _mean([r["score"] for r in records if r["category"] == cat])
            if mean is not None:
                categories[cat] = mean
        turn_scores = {str(t): _mean([r["score"] for r in records if r["turn"] == t]) for t in range(1, n_turns + 1)}
        score = _mean([r["score"] for r in records]) if n_turns == 2 else turn_scores["1"]
        if score is None:  # two_turn with every turn-1 rating unparsed is impossible here; single mode guarded above
            raise BenchError("no parseable MT-Bench rating for the scored turn(s); see eval/mtbench_judgments_*.jsonl")
        return {
            "score": score, "mode": mode, "turn_scores": turn_scores, "categories": categories,
            "n_questions": len(questions), "n_judgments": len(records), "n_unparsed": len(records) - len(parsed),
            "partial": limit is not None,
            "n_cached": sum(1 for r in records if r["cached"]), "judge": cfg.describe(),
            "judge_prompts": sorted({r["judge"][1] for r in records}),
        }

"""MT-Bench evaluator: real tiny checkpoint answers, fschat prompt building, a real local HTTP judge."""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "fixtures" / "eval"))
from evalkit import FIXTURES, ScriptedJudge, free_port, make_run, tiny_lm_dir  # noqa: E402

from bench.errors import BenchError  # noqa: E402
from bench.evaluators.run import run_evaluators  # noqa: E402

pytestmark = pytest.mark.timeout(300)
MT = FIXTURES / "mtbench"


def _settings(url, **kw):
    return {"mtbench_questions": str(MT / "question.jsonl"), "mtbench_judge_prompts": str(MT / "judge_prompts.jsonl"),
            "mtbench_references": str(MT / "reference_answer.jsonl"), "judge_base_url": url,
            "judge_model": "grader-1", "judge_backoff": 0.01, "judge_max_retries": 1, "mtbench_max_new_tokens": 8,
            "judge_workers": 2, **kw}


@pytest.fixture(scope="module")
def lm():
    return tiny_lm_dir(seed=1)


def _rating_by_question(body, n):
    """A scripted judge that rates by question: 9001 -> 8, 9002 -> 4, 9003 -> 6 (and +1 on second turns)."""
    user = body["messages"][-1]["content"]
    base = 8 if "garden party" in user else 4 if "pencils" in user else 6
    second = "second reply" in user
    return f"Solid. Rating: [[{base + (1 if second else 0)}]]"


def test_single_turn_protocol_end_to_end(tmp_path, lm):
    run = make_run(tmp_path / "runs", "r1", ckpt=lm)
    with ScriptedJudge(reply=_rating_by_question) as srv:
        out = run_evaluators([run], ["mtbench"], _settings(srv.base_url, mtbench_mode="single"),
                             cache_dir=tmp_path / "cache")
        res = out[str(run)]["mtbench"]
        assert len(srv.requests) == 3  # one judgment per question (turn 1 only)
    assert res["mode"] == "single" and res["score"] == pytest.approx((8 + 4 + 6) / 3)
    assert res["categories"] == {"math": 4.0, "roleplay": 6.0, "writing": 8.0}
    assert res["n_judgments"] == 3 and res["n_unparsed"] == 0 and res["turn_scores"] == {"1": res["score"]}
    # the math question went to the reference-based prompt, filled with the reference answer (fschat format)
    req = next(r for r in srv.requests if "pencils" in r["messages"][-1]["content"])
    assert req["messages"][0]["role"] == "system" and "correct solution" in req["messages"][0]["content"]
    assert "7 x 12 = 84" in req["messages"][-1]["content"]
    assert req["max_tokens"] == 2048 and req["temperature"] == 0.0
    # stored in metrics.json with the version and secret-free settings
    metrics = json.loads((run / "metrics.json").read_text())["mtbench"]
    assert metrics["version"] == "1" and metrics["settings"]["mtbench_mode"] == "single"
    answers = [json.loads(line) for line in (run / "eval" / "mtbench_answers.jsonl").read_text().splitlines()]
    assert {a["question_id"] for a in answers} == {9001, 9002, 9003}
    assert all(len(a["choices"][0]["turns"]) == 1 for a in answers)


def test_two_turn_protocol_and_resume_from_cache(tmp_path, lm):
    run = make_run(tmp_path / "runs", "r2", ckpt=lm)
    cache = tmp_path / "cache"
    with ScriptedJudge(reply=_rating_by_question) as srv:
        res = run_evaluators([run], ["mtbench"], _settings(srv.base_url, mtbench_mode="two_turn"),
                             cache_dir=cache)[str(run)]["mtbench"]
        assert len(srv.requests) == 6
    assert res["turn_scores"] == {"1": pytest.approx(6.0), "2": pytest.approx(7.0)}
    assert res["score"] == pytest.approx(6.5)  # mean over both turns (FastChat's average)
    assert res["categories"]["writing"] == pytest.approx(8.5)
    answers = [json.loads(line) for line in (run / "eval" / "mtbench_answers.jsonl").read_text().splitlines()]
    assert all(len(a["choices"][0]["turns"]) == 2 for a in answers)
    # the second-turn judge saw the model's own turn-1 answer
    sec = [r for r in srv.requests if "second reply" in r["messages"][-1]["content"]]
    assert len(sec) == 3
    # a rerun (judge now unreachable) is served entirely from the caches
    dead = f"http://127.0.0.1:{free_port()}/v1"
    res2 = run_evaluators([run], ["mtbench"], _settings(dead, mtbench_mode="two_turn"), cache_dir=cache)
    assert res2[str(run)]["mtbench"]["score"] == res["score"]
    assert res2[str(run)]["mtbench"]["n_cached"] == 6


def test_unparsed_judgments_are_excluded_and_counted(tmp_path, lm):
    run = make_run(tmp_path / "runs", "r3", ckpt=lm)

    def reply(body, n):
        return "no grade from me" if "lighthouse" in body["messages"][-1]["content"] else "[[5]]"

    with ScriptedJudge(reply=reply) as srv:
        res = run_evaluators([run], ["mtbench"], _settings(srv.base_url, judge_parse_retries=1),
                             cache_dir=tmp_path / "cache")[str(run)]["mtbench"]
        assert len(srv.requests) == 4  # 3 + one parse retry of the malformed one
    assert res["n_unparsed"] == 1 and res["score"] == 5.0 and "roleplay" not in res["categories"]
    rec = [json.loads(line) for line in (run / "eval" / "mtbench_judgments_single.jsonl").read_text().splitlines()]
    bad = [r for r in rec if r["score"] is None]
    assert len(bad) == 1 and bad[0]["judgment"] == "no grade from me" and bad[0]["question_id"] == 9003


def test_no_parseable_rating_at_all_is_an_error(tmp_path, lm):
    run = make_run(tmp_path / "runs", "r4", ckpt=lm)
    with ScriptedJudge(reply="I refuse to grade.") as srv:
        with pytest.raises(BenchError, match="no parseable.*judge_retry_unparsed=true"):
            run_evaluators([run], ["mtbench"], _settings(srv.base_url, judge_parse_retries=0),
                           cache_dir=tmp_path / "cache")
    assert not (run / "metrics.json").exists()


def test_judge_down_is_a_clear_error_and_answers_are_kept(tmp_path, lm):
    run = make_run(tmp_path / "runs", "r5", ckpt=lm)
    url = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(BenchError, match="unreachable.*start the judge server or fix judge_base_url"):
        run_evaluators([run], ["mtbench"], _settings(url), cache_dir=tmp_path / "cache")
    assert (run / "eval" / "mtbench_answers.jsonl").exists()


def test_missing_files_offline_is_a_clear_error(tmp_path, lm, monkeypatch):
    monkeypatch.setenv("BENCH_OFFLINE", "1")
    run = make_run(tmp_path / "runs", "r6", ckpt=lm)
    with pytest.raises(BenchError, match=r"MT-Bench questions not found locally.*offline.*mtbench_questions=PATH"):
        run_evaluators([run], ["mtbench"], {"judge_base_url": "http://127.0.0.1:1/v1"}, cache_dir=tmp_path / "c")
    with pytest.raises(BenchError, match=r"mtbench_questions=.*does not exist"):
        run_evaluators([run], ["mtbench"], {"mtbench_questions": str(tmp_path / "nope.jsonl")},
                       cache_dir=tmp_path / "c")
    # a math question with no reference file given (and none fetchable) names the setting to pass
    s = _settings("http://127.0.0.1:1/v1")
    del s["mtbench_references"]
    with pytest.raises(BenchError, match=r"MT-Bench references not found locally.*mtbench_references=PATH"):
        run_evaluators([run], ["mtbench"], s, cache_dir=tmp_path / "c")


def test_invalid_files_are_clear_errors(tmp_path, lm):
    run = make_run(tmp_path / "runs", "r7", ckpt=lm)
    bad_q = tmp_path / "q.jsonl"
    bad_q.write_text(json.dumps({"question_id": 1, "turns": ["x"]}) + "\n")
    with pytest.raises(BenchError, match="needs question_id, category"):
        run_evaluators([run], ["mtbench"], _settings("http://127.0.0.1:1/v1", mtbench_questions=str(bad_q)),
                       cache_dir=tmp_path / "c")
    prompts = tmp_path / "p.jsonl"
    lines = [json.loads(line) for line in (MT / "judge_prompts.jsonl").read_text().splitlines()]
    prompts.write_text("".join(json.dumps(p) + "\n" for p in lines if p["name"] != "single-v1-multi-turn"))
    with pytest.raises(BenchError, match="no judge prompt named 'single-v1-multi-turn'"):
        run_evaluators([run], ["mtbench"], _settings("http://127.0.0.1:1/v1", mtbench_judge_prompts=str(prompts),
                                                     mtbench_mode="two_turn"), cache_dir=tmp_path / "c")
    with pytest.raises(BenchError, match="mtbench_mode"):
        run_evaluators([run], ["mtbench"], _settings("http://127.0.0.1:1/v1", mtbench_mode="three"),
                       cache_dir=tmp_path / "c")


def test_fixture_files_use_the_official_schemas():
    for line in (MT / "question.jsonl").read_text().splitlines():
        q = json.loads(line)
        assert set(q) == {"question_id", "category", "turns"}
    for line in (MT / "judge_prompts.jsonl").read_text().splitlines():
        p = json.loads(line)
        assert set(p) == {"name", "type", "system_prompt", "prompt_template", "description", "category",
                          "output_format"}
        assert re.search(r"\[\[", p["prompt_template"])

"""End to end against a real OpenAI-compatible server: `transformers serve` with the embedded SmolLM2-135M-Instruct.

The judge is a 135M model, so its ratings are whatever it says: these tests check the pipeline (requests made
through the openai client, ratings parsed or recorded as unparsed per the documented policy, results stored, every
judgment cached so that a rerun needs no server), not particular scores.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "fixtures" / "eval"))
from evalkit import FIXTURES, free_port, make_run, served_model_dir, suite_generations, tiny_lm_dir, transformers_serve  # noqa: E402

from bench.errors import BenchError  # noqa: E402
from bench.evaluators.run import run_evaluators  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
MT = FIXTURES / "mtbench"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    model_dir = served_model_dir()
    log = tmp_path_factory.mktemp("serve") / "transformers-serve.log"
    with transformers_serve(model_dir, log) as url:
        yield url, str(model_dir)


def test_mtbench_two_turn_against_transformers_serve(tmp_path, served):
    url, model = served
    run = make_run(tmp_path / "runs", "r", ckpt=tiny_lm_dir(seed=1))
    settings = {"mtbench_questions": str(MT / "question.jsonl"),
                "mtbench_judge_prompts": str(MT / "judge_prompts.jsonl"),
                "mtbench_references": str(MT / "reference_answer.jsonl"), "mtbench_mode": "two_turn",
                "mtbench_max_new_tokens": 12, "judge_base_url": url, "judge_model": model, "judge_max_tokens": 24,
                "judge_parse_retries": 0, "judge_workers": 2, "judge_timeout": 120}
    cache = tmp_path / "cache"
    try:
        res = run_evaluators([run], ["mtbench"], settings, cache_dir=cache)[str(run)]["mtbench"]
    except BenchError as e:  # documented: a judge that never gives a rating is an error, judgments are kept
        assert "no parseable" in str(e)
        res = None
    records = [json.loads(line) for line in
               (run / "eval" / "mtbench_judgments_two_turn.jsonl").read_text().splitlines()]
    assert len(records) == 6 and {r["turn"] for r in records} == {1, 2}
    for r in records:
        assert isinstance(r["judgment"], str) and r["judge"] == [model, r["judge"][1]]
        assert r["score"] is None or 1 <= r["score"] <= 10
    parsed = [r["score"] for r in records if r["score"] is not None]
    if res is not None:
        assert res["n_judgments"] == 6 and res["n_unparsed"] == 6 - len(parsed)
        assert res["score"] == pytest.approx(sum(parsed) / len(parsed))
    # every judgment is cached: a rerun succeeds (or fails the same way) with no server at all
    dead = {**settings, "judge_base_url": f"http://127.0.0.1:{free_port()}/v1"}
    try:
        again = run_evaluators([run], ["mtbench"], dead, cache_dir=cache)[str(run)]["mtbench"]
        assert res is not None and again["score"] == res["score"] and again["n_cached"] == 6
    except BenchError as e:
        assert res is None and "no parseable" in str(e)


def test_alpacaeval_against_transformers_serve(tmp_path, served):
    url, model = served
    root = tmp_path / "runs"
    n = 4
    mine = make_run(root, "mine", method="tvkd", generations=suite_generations(n, lambda i, r: r["meta"]["answer"]))
    make_run(root, "adpa", method="adpa", generations=suite_generations(n, lambda i, r: "I am not sure."))
    settings = {"alpaca_annotator": str(FIXTURES / "alpaca_annotator" / "prefdistill_test_judge"),
                "judge_base_url": url, "judge_model": model, "judge_workers": 2, "judge_timeout": 120}
    cache = tmp_path / "cache"
    try:
        res = run_evaluators([mine], ["alpacaeval"], settings, cache_dir=cache)[str(mine)]["alpacaeval"]
    except BenchError as e:  # documented: no usable annotation at all is an error
        assert "no usable annotation" in str(e)
        res = None
    annotations = json.loads((mine / "eval" / "alpacaeval" / "annotations.json").read_text())
    assert len(annotations) == n
    if res is not None:
        assert res["n_total"] + res["n_unparsed"] == n and 0 <= res["win_rate"] <= 100
        assert res["reference_run"] == "adpa" and res["length_controlled_winrate"] is None
    dead = {**settings, "judge_base_url": f"http://127.0.0.1:{free_port()}/v1"}
    try:
        again = run_evaluators([mine], ["alpacaeval"], dead, cache_dir=cache)[str(mine)]["alpacaeval"]
        assert res is not None and again["win_rate"] == res["win_rate"]
    except BenchError as e:
        assert res is None and "no usable annotation" in str(e)

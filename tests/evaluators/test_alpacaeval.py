"""AlpacaEval evaluator: alpaca_eval.evaluate with its annotator machinery, against real local HTTP judges."""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "fixtures" / "eval"))
from evalkit import FIXTURES, ScriptedJudge, free_port, make_run, suite_generations, tiny_lm_dir  # noqa: E402

from bench.errors import BenchError  # noqa: E402
from bench.evaluators.run import run_evaluators  # noqa: E402

pytestmark = pytest.mark.timeout(300)
ANNOTATOR = str(FIXTURES / "alpaca_annotator" / "prefdistill_test_judge")
N = 4


def _settings(url, **kw):
    return {"alpaca_annotator": ANNOTATOR, "judge_base_url": url, "judge_model": "grader-2", "judge_max_retries": 1,
            "judge_workers": 2, **kw}


def _pick_model(body, n):
    """Prefer the output that says MODEL, except on the first instruction (prefer the reference there): 3 wins of 4,
    whatever the suite's prompts are."""
    user = body["messages"][-1]["content"]
    a = re.search(r"Output \(a\): (.*?)\n\nOutput \(b\)", user, re.DOTALL).group(1)
    model_is_a = "MODEL" in a
    if "MODEL answer 0" in user:
        model_is_a = not model_is_a
    return "Output (a)" if model_is_a else "Output (b)"


@pytest.fixture
def runs(tmp_path):
    root = tmp_path / "runs"
    mine = make_run(root, "dpo-run", method="dpo", ckpt=tiny_lm_dir(seed=1),
                    generations=suite_generations(N, lambda i, r: f"MODEL answer {i}"))
    make_run(root, "adpa-run", method="adpa", ckpt=tiny_lm_dir(seed=2),
             generations=suite_generations(N, lambda i, r: f"reference answer {i}"))
    return root, mine


def test_win_rate_against_the_adpa_run_on_the_embedded_prompts(tmp_path, runs):
    root, mine = runs
    with ScriptedJudge(reply=_pick_model) as srv:
        res = run_evaluators([mine], ["alpacaeval"], _settings(srv.base_url), cache_dir=tmp_path / "cache")
        res = res[str(mine)]["alpacaeval"]
        assert len(srv.requests) == N
        assert srv.requests[0]["model"] == "grader-2"
        assert srv.requests[0]["messages"][0]["role"] == "system"  # alpaca_eval's chatml -> chat messages
    assert res["score"] == pytest.approx(75.0) and res["win_rate"] == pytest.approx(75.0)
    assert res["n_total"] == N and res["n_wins"] == 3 and res["n_wins_base"] == 1 and res["n_unparsed"] == 0
    assert res["standard_error"] > 0
    assert res["reference_run"] == "adpa-run" and res["instruction_set"] == "embedded"
    assert res["length_controlled_winrate"] is None and "full standard AlpacaEval set" in res["lc_note"]
    assert (mine / "eval" / "alpacaeval" / "annotations.json").exists()
    stored = json.loads((mine / "metrics.json").read_text())["alpacaeval"]
    assert stored["settings"]["alpaca_annotator"] == ANNOTATOR and stored["version"] == "1"
    # rerun with the judge gone: every annotation comes from the cache
    dead = f"http://127.0.0.1:{free_port()}/v1"
    again = run_evaluators([mine], ["alpacaeval"], _settings(dead), cache_dir=tmp_path / "cache")
    assert again[str(mine)]["alpacaeval"]["win_rate"] == pytest.approx(75.0)


def test_local_instruction_file_generates_answers_for_both_runs(tmp_path, runs):
    root, mine = runs
    instr = tmp_path / "instructions.json"
    instr.write_text(json.dumps([{"instruction": "Name a fruit."}, {"instruction": "Say hello."},
                                 {"instruction": "Count to three."}]))
    with ScriptedJudge(reply="Output (b)") as srv:
        res = run_evaluators([mine], ["alpacaeval"],
                             _settings(srv.base_url, alpaca_instructions=str(instr), alpaca_max_new_tokens=6),
                             cache_dir=tmp_path / "cache")[str(mine)]["alpacaeval"]
        assert len(srv.requests) == 3
    assert res["n_total"] == 3 and res["instruction_set"] == str(instr) and 0 <= res["win_rate"] <= 100
    for run_id in ("dpo-run", "adpa-run"):
        answers = (root / run_id / "eval" / "alpaca_answers.jsonl").read_text().splitlines()
        assert len(answers) == 3


def test_missing_reference_run_says_how_to_make_it(tmp_path):
    mine = make_run(tmp_path / "runs", "lonely", method="tvkd", student="stu", teacher="tea", dataset="embedded",
                    generations=suite_generations(2, lambda i, r: "x"))
    with pytest.raises(BenchError) as e:
        run_evaluators([mine], ["alpacaeval"], _settings("http://127.0.0.1:1/v1"), cache_dir=tmp_path / "c")
    msg = str(e.value)
    assert "no ADPA run for student=stu teacher=tea dataset=embedded" in msg
    assert "`bench run --method adpa --student stu --teacher tea --dataset embedded`" in msg
    assert "--build-reference" in msg


def test_build_reference_callable_makes_the_missing_run(tmp_path):
    root = tmp_path / "runs"
    mine = make_run(root, "mine", method="dckd", generations=suite_generations(3, lambda i, r: f"MODEL {i}"))
    calls = []

    def build_reference(manifest, runs_dir):  # the CLI's --build-reference signature
        calls.append((manifest["run_id"], manifest["student"], manifest["teacher"], manifest["dataset"], runs_dir))
        return make_run(runs_dir, "built-adpa", method="adpa",
                        generations=suite_generations(3, lambda i, r: f"ref {i}"))

    with ScriptedJudge(reply=_pick_model) as srv:
        out = run_evaluators([mine], ["alpacaeval"], _settings(srv.base_url, build_reference=build_reference),
                             cache_dir=tmp_path / "cache")
    assert calls == [("mine", "tiny", "tiny-t", "embedded", root)]
    res = out[str(mine)]["alpacaeval"]
    assert res["reference_run"] == "built-adpa"
    assert "build_reference" not in res["settings"]  # callables never reach metrics.json


def test_the_adpa_run_itself_scores_fifty_without_judge_calls(tmp_path, runs):
    root, _ = runs
    with ScriptedJudge(reply="Output (a)") as srv:
        res = run_evaluators([root / "adpa-run"], ["alpacaeval"], _settings(srv.base_url),
                             cache_dir=tmp_path / "cache")[str(root / "adpa-run")]["alpacaeval"]
        assert len(srv.requests) == 0
    assert res["win_rate"] == pytest.approx(50.0) and res["n_draws"] == N


def test_http_500_is_a_clear_error(tmp_path, runs):
    _, mine = runs
    with ScriptedJudge(status=500) as srv:
        with pytest.raises(BenchError, match="answered HTTP 500"):
            run_evaluators([mine], ["alpacaeval"], _settings(srv.base_url), cache_dir=tmp_path / "cache")
        assert len(srv.requests) >= 2  # the openai client retried


def test_slow_judge_times_out_with_a_clear_error(tmp_path, runs):
    _, mine = runs
    with ScriptedJudge(reply="Output (a)", delay=2.0) as srv:
        with pytest.raises(BenchError, match=r"timed out after 1 attempt\(s\) of 0.3s"):
            run_evaluators([mine], ["alpacaeval"], _settings(srv.base_url, judge_timeout=0.3, judge_max_retries=0),
                           cache_dir=tmp_path / "cache")


def test_logprob_annotator_on_a_server_without_logprobs_is_a_clear_error(tmp_path, runs):
    _, mine = runs
    with ScriptedJudge(reply="m") as srv:  # the default weighted_* config reads logprobs, which this server omits
        with pytest.raises(BenchError, match=r"no usable annotation \(4 unparsed.*logprobs"):
            run_evaluators([mine], ["alpacaeval"], {"judge_base_url": srv.base_url, "judge_model": "g"},
                           cache_dir=tmp_path / "cache")
        assert len(srv.requests) == N


def test_custom_completion_function(tmp_path, runs):
    _, mine = runs
    seen = []

    def longer_output_wins(prompts, **kwargs):
        """A real completion function in alpaca_eval's interface: prefers the longer output."""
        seen.append(kwargs.get("model_name"))
        outs = []
        for p in prompts:
            a = re.search(r"Output \(a\): (.*?)\n\nOutput \(b\)", p, re.DOTALL).group(1)
            b = re.search(r"Output \(b\): (.*?)\n\nWhich", p, re.DOTALL).group(1)
            outs.append("Output (a)" if len(a) >= len(b) else "Output (b)")
        return {"completions": outs}

    res = run_evaluators([mine], ["alpacaeval"],
                         {"alpaca_annotator": ANNOTATOR, "alpaca_fn_completions": longer_output_wins},
                         cache_dir=tmp_path / "cache")[str(mine)]["alpacaeval"]
    assert seen and res["n_total"] == N
    assert res["win_rate"] == pytest.approx(0.0)  # "reference answer i" is longer than "MODEL answer i"


def test_unknown_annotator_is_a_clear_error(tmp_path, runs):
    _, mine = runs
    with pytest.raises(BenchError, match="unknown alpaca_annotator 'nope'"):
        run_evaluators([mine], ["alpacaeval"], {"alpaca_annotator": "nope"}, cache_dir=tmp_path / "cache")


def test_alpaca_eval_set_offline_is_a_clear_error(tmp_path, runs, monkeypatch):
    _, mine = runs
    monkeypatch.setenv("BENCH_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hub-cache"))
    with pytest.raises(BenchError, match=r"AlpacaEval instructions .* could not be loaded.*alpaca_instructions=PATH"):
        run_evaluators([mine], ["alpacaeval"], _settings("http://127.0.0.1:1/v1", alpaca_instructions="alpaca_eval"),
                       cache_dir=tmp_path / "cache")


def test_instruction_file_in_the_alpaca_eval_format(tmp_path):
    from bench.evaluators.alpacaeval import _read_instruction_file

    f = tmp_path / "alpaca_eval.json"
    f.write_text(json.dumps([{"instruction": "Give me a tip.", "output": "Sleep.", "generator": "text_davinci_003",
                              "dataset": "helpful_base"}, "Tell a joke."]))
    assert _read_instruction_file(f) == [{"instruction": "Give me a tip.", "dataset": "helpful_base"},
                                         {"instruction": "Tell a joke.", "dataset": "alpaca_eval"}]
    f.write_text(json.dumps([{"output": "no instruction"}]))
    with pytest.raises(BenchError, match="row 1: needs a non-empty string 'instruction'"):
        _read_instruction_file(f)

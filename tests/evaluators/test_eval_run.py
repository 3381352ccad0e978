"""The evaluation harness: run_evaluators stores results in metrics.json with secret-free settings."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "fixtures" / "eval"))
from evalkit import make_run  # noqa: E402

from bench.errors import BenchError  # noqa: E402
from bench.evaluators import Evaluator, register_evaluator  # noqa: E402
from bench.evaluators.run import is_secret_name, run_evaluators, scrub_settings  # noqa: E402


@register_evaluator
class _LengthEval(Evaluator):
    """A real (if simple) evaluator: mean response length of generations.jsonl."""

    name = "test_eval_length"
    version = "7"

    def evaluate(self, run, ctx):
        gens = run.generations()
        return {"score": sum(len(g["response"]) for g in gens) / len(gens), "n": len(gens),
                "seen_cache": ctx.cache_dir}


@register_evaluator
class _BrokenEval(Evaluator):
    name = "test_eval_broken"

    def evaluate(self, run, ctx):
        return {"score": "high"}


def _gens(*responses):
    return [{"id": str(i), "prompt": [{"role": "user", "content": "q"}], "response": r, "meta": {}}
            for i, r in enumerate(responses)]


def test_results_are_stored_with_version_and_scrubbed_settings(tmp_path, monkeypatch):
    a = make_run(tmp_path, "a", generations=_gens("xx", "xxxx"))
    b = make_run(tmp_path, "b", generations=_gens("x"))
    settings = {"judge_api_key": "sk-SECRET", "hf_token": "hf_SECRET", "judge_api_key_env": "MY_KEY",
                "judge_max_tokens": 32, "callback": lambda: None, "path": tmp_path}
    out = run_evaluators([a, b], ["test_eval_length"], settings, cache_dir=tmp_path / "cache")
    assert out[str(a)]["test_eval_length"]["score"] == 3.0 and out[str(b)]["test_eval_length"]["score"] == 1.0
    stored = json.loads((a / "metrics.json").read_text())["test_eval_length"]
    assert stored["version"] == "7" and stored["n"] == 2 and stored["seen_cache"] == str(tmp_path / "cache")
    assert stored["settings"] == {"judge_api_key_env": "MY_KEY", "judge_max_tokens": 32, "path": str(tmp_path)}
    assert "SECRET" not in (a / "metrics.json").read_text()


def test_non_numeric_score_and_unknown_names_are_errors(tmp_path):
    a = make_run(tmp_path, "a", generations=_gens("x"))
    with pytest.raises(BenchError, match="no finite numeric 'score'"):
        run_evaluators([a], ["test_eval_broken"], {}, cache_dir=tmp_path / "c")
    with pytest.raises(BenchError, match="unknown evaluator 'nope'"):
        run_evaluators([a], ["nope"], {}, cache_dir=tmp_path / "c")
    with pytest.raises(BenchError, match="not a run directory"):
        run_evaluators([tmp_path / "missing"], ["test_eval_length"], {}, cache_dir=tmp_path / "c")


def test_scrub_keeps_only_an_evaluators_own_settings():
    s = {"rm_model": "fsfairx", "judge_model": "gpt-4", "mtbench_mode": "single", "device": "cpu",
         "judge_base_url": "http://u:p@host:8000/v1", "OPENAI_API_KEY": "x"}
    assert scrub_settings(s, "rm") == {"rm_model": "fsfairx", "device": "cpu"}
    assert scrub_settings(s, "mtbench") == {"judge_model": "gpt-4", "mtbench_mode": "single", "device": "cpu",
                                            "judge_base_url": "http://host:8000/v1"}
    assert is_secret_name("api_key") and is_secret_name("HF_TOKEN") and not is_secret_name("judge_api_key_env")
    assert not is_secret_name("judge_max_tokens")

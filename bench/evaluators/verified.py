"""Embedded verified score: mean checker score of the run's greedy generations on the test prompts."""
from __future__ import annotations

from bench.evaluators import register_evaluator
from bench.evaluators.base import EvalContext, Evaluator
from bench.scoring.metrics import verified_scores


@register_evaluator
class Verified(Evaluator):
    name = "verified"
    version = "3"  # 2: per-prompt scores ("items"); 3: house-style share of the styled prompts

    def evaluate(self, run, ctx: EvalContext) -> dict:
        rows = run.generations()
        return verified_scores(rows, [r["response"] for r in rows], items=True)

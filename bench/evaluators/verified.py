"""Embedded verified score: mean checker score of the run's greedy generations on the test prompts."""
from __future__ import annotations

from bench.evaluators import register_evaluator
from bench.evaluators.base import EvalContext, Evaluator
from bench.scoring import verified_scores


@register_evaluator
class Verified(Evaluator):
    name = "verified"
    version = "2"  # 2: per-prompt scores ("items")

    def evaluate(self, run, ctx: EvalContext) -> dict:
        rows = run.generations()
        return verified_scores(rows, [r["response"] for r in rows], items=True)

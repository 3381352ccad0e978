"""The ``rm`` evaluator: mean reward-model score of a run's greedy test generations. Resolving, loading and
scoring with the reward model: :mod:`bench.scoring.reward_model` (protocol in its docstring)."""
from __future__ import annotations

from bench.errors import BenchError
from bench.evaluators import Evaluator, register_evaluator
from bench.scoring.reward_model import EMBEDDED_RM, RewardScorer, summary
from bench.scoring.rm_protocol import as_messages


@register_evaluator
@register_evaluator
class RMEvaluator(Evaluator):
    """Mean reward-model score of the run's greedy test generations (``generations.jsonl``)."""

    name = "rm"
    version = "1"

    def evaluate(self, run, ctx) -> dict:
        settings = dict(ctx.settings or {})
        manifest = run.manifest
        default = EMBEDDED_RM if str(manifest.get("dataset", "")).lower() == "embedded" else "fsfairx"
        rm_model = str(settings.get("rm_model") or default)
        gens = run.generations()
        if not gens:
            raise BenchError(f"{run.path}/generations.jsonl is empty; rerun `bench run` to generate test responses")
        prompts, responses = [], []
        for i, row in enumerate(gens):
            if "prompt" not in row or not isinstance(row.get("response"), str):
                raise BenchError(f"{run.path}/generations.jsonl row {i + 1} lacks 'prompt' or a string 'response'; "
                                 "regenerate it with `bench run`")
            prompts.append(as_messages(row["prompt"]))
            responses.append(row["response"])
        scorer = RewardScorer(rm_model, settings, ctx.cache_dir)
        scores, cached = scorer.score(prompts, responses)
        return {**summary(scores), "rm_model": rm_model, "rm": scorer.identity(), "cached": cached}

"""Reward accuracy: share of validation pairs where the run's model gives y_w a higher mean log-prob than y_l."""
from __future__ import annotations

from bench.evaluators import register_evaluator
from bench.evaluators.base import EvalContext, Evaluator
from bench.scoring.metrics import reward_accuracy


@register_evaluator
class RewardAccuracy(Evaluator):
    name = "reward_accuracy"
    version = "2"  # 2: per-pair outcomes ("items")

    def evaluate(self, run, ctx: EvalContext) -> dict:
        from bench.config import RunConfig
        from bench.modeling.models import load_model
        from bench.pipeline.graph import Pipeline
        from bench.scoring.runtime import checkpoint_dir

        pipe = Pipeline(RunConfig(**{**run.manifest["config"], "eval_suite": ()}))
        model = ctx.settings.get("model") or load_model(checkpoint_dir(run))
        chosen = pipe.side_pairs("pref_val", "chosen", {})
        rejected = pipe.side_pairs("pref_val", "rejected", {})
        ids = [r["id"] for r in pipe.split_rows("pref_val")]
        return reward_accuracy(model, chosen, rejected, pipe.tok.pad_token_id, pipe.infer_bs, ids=ids)

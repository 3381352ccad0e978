"""The reference levels a reader needs to judge a student's score (`bench leaderboard --plot` draws them): the DPO
teacher's and the SFT student's verified score on the same test prompts, and the verified score of the chosen and
rejected sides of the student's training pairs.

Computed when a run is written, only on data with checkers, and only for model stages already built (a reference
never trains a teacher an SFT run did not need); the greedy test generations are cached stages, so each costs one
generation pass per cache, shared by every run.
"""
from __future__ import annotations


def reference_levels(pipe) -> dict | None:
    """{"dpo_teacher", "sft_student", "chosen", "rejected"} verified scores in [0, 1] (those available), or None."""
    from bench.pipeline.selection import has_checkers
    from bench.scoring.metrics import pair_side_scores, verified_scores

    rows = pipe.split_rows("test")
    if not has_checkers(rows):
        return None
    out: dict[str, float] = {}
    for role in ("dpo_teacher", "sft_student"):
        if pipe.built_path(role) is not None:
            texts = pipe.generation_texts(role, "test")
            out[role] = float(verified_scores(rows, texts)["score"])
    pairs = pipe.split_rows("pref_train")
    if has_checkers(pairs):
        out.update({side: v["score"] for side, v in pair_side_scores(pairs).items()})
    return out

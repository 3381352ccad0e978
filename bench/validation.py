"""Validation during training, used for checkpoint selection (`select_by` in the run preset)."""
from __future__ import annotations

from bench.errors import BenchError
from bench.generate import decode, make_generator
from bench.scoring import reward_accuracy, verified_scores


def make_validator(pipe, method):
    """A callable(model) -> {"score": float, ...}, or None when selection is "last"."""
    mode = pipe.preset.get("select_by", "verified")
    n = int(pipe.preset.get("val_prompts", 32))
    rows = pipe.bundle.split("pref_val")[:n]
    if mode == "last":
        return None
    if not rows:
        raise BenchError("checkpoint selection needs pref_val rows; add validation data or --set select_by=last")
    if mode == "reward_accuracy":
        chosen = pipe.side_pairs("pref_val", "chosen", {})[:n]
        rejected = pipe.side_pairs("pref_val", "rejected", {})[:n]
        return lambda model: reward_accuracy(model, chosen, rejected, pipe.tok.pad_token_id, pipe.infer_bs)
    prompts = pipe.prompts("pref_val")[:n]

    def responses(model) -> list[str]:
        gen = make_generator("hf", model, pipe.tok, batch_size=pipe.infer_bs)  # an in-memory model mid-training
        return [decode(pipe.tok, o) for o in gen.generate(prompts, pipe.enc.max_response_len, desc="validate")]

    if mode == "verified":
        verified_scores(rows, [""] * len(rows))  # fail early on a dataset without checkers
        return lambda model: verified_scores(rows, responses(model))
    if mode == "rm":
        from bench.evaluators.rm import validation_scorer

        score = validation_scorer(pipe.preset.get("rm_model", "fsfairx"), pipe)
        return lambda model: {"score": score([r["prompt"] for r in rows], responses(model))}
    raise BenchError(f"select_by={mode!r} is invalid; choose verified, rm, reward_accuracy or last")

"""Validation during training, used for checkpoint selection (`select_by` in the run preset)."""
from __future__ import annotations

from bench.errors import BenchError
from bench.modeling.generate import decode, make_generator
from bench.scoring.metrics import reward_accuracy, verified_scores

SELECT_MODES = ("verified", "rm", "reward_accuracy", "last", "auto")


def has_checkers(rows: list[dict]) -> bool:
    """Rows the verified score can grade: embedded-suite prompts whose meta.family has a checker."""
    from bench.data.suite import FAMILIES

    return bool(rows) and all((r.get("meta") or {}).get("family") in FAMILIES for r in rows)


def resolve_select_by(preset: dict, bundle, explicit: bool) -> tuple[str, str | None]:
    """(checkpoint-selection mode, notice line or None). Default (`auto`, or a preset's `verified` that the user
    did not set): the verified score where the validation prompts have checkers (the embedded suite), reward
    accuracy elsewhere. An explicit `--set select_by=verified` on other data is an error naming the fix."""
    mode = preset.get("select_by") or "auto"
    if mode not in SELECT_MODES:
        raise BenchError(f"select_by={mode!r} is invalid; choose {', '.join(SELECT_MODES)}")
    rows = bundle.split("pref_val")
    if mode != "last" and not rows:
        raise BenchError(f"checkpoint selection needs validation pairs but dataset '{bundle.name}' has no pref_val "
                         "rows; add a val.jsonl (or more training rows to carve them from), or --set select_by=last")
    checkable = has_checkers(rows)
    if mode == "auto" or (mode == "verified" and not explicit and not checkable):
        resolved = "verified" if checkable else "reward_accuracy"
        notice = None if checkable else (f"checkpoint selection: reward accuracy on {len(rows)} validation pairs "
                                         "(the verified score needs embedded-suite prompts; --set select_by=rm or "
                                         "last to change)")
        return resolved, notice
    if mode == "verified" and not checkable:
        raise BenchError(f"select_by=verified needs embedded-suite prompts, and dataset '{bundle.name}' has none; "
                         "use --set select_by=reward_accuracy (or rm, last)")
    return mode, None


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
        from bench.scoring.reward_model import validation_scorer

        score = validation_scorer(pipe.preset.get("rm_model", "fsfairx"), pipe)
        return lambda model: {"score": score([r["prompt"] for r in rows], responses(model))}
    raise BenchError(f"select_by={mode!r} is invalid; choose verified, rm, reward_accuracy or last")

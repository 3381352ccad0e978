"""KL to the teacher on the test prompts: a diagnostic of how far a trained student's next-token distribution is from
the DPO teacher's where the student actually goes. Not a method's loss; lower means closer to the teacher.

    teacher_kl = (1/N) Σ_{x ∈ test} Σ_{t=1..|ŷ|} KL( π_dpo(·|s_t) ‖ π_θ(·|s_t) ),     s_t = (x, ŷ_<t),

ŷ = the run's own greedy test response (``generations.jsonl``: the responses `verified` scored), re-encoded with the
run's encoder (the response text, EOS appended, capped like every response), π at temperature 1 over the full
vocabulary, float64 accumulation, N = the number of response tokens. So it is measured on the student's states
(on-policy), not on the teacher's: a student that imitates the teacher where it goes scores low even when its
answers are wrong, which is what tells capacity errors (low KL, the teacher is uncertain too) from not having
learnt what the teacher knows (high KL).

Also reported: ``sft_student``, the same quantity for the SFT student π_sref (every method's initialisation) on the
same states, when it is in the cache, so a run's number reads as a change from where it started; ``tokens``, ``n``.
Settings: ``teacher_kl_n`` (the first n test rows only), ``teacher_kl_build=true`` (train the DPO teacher if the cache
lacks it).
"""
from __future__ import annotations

from bench.errors import BenchError
from bench.evaluators import register_evaluator
from bench.evaluators.base import EvalContext, Evaluator
from bench.evaluators.value_kl import _bool, mean_value_kl


def response_pairs(pipe, rows: list[dict]) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, response ids) of generation rows: the response text's tokens + EOS, capped to the response
    budget (an empty response is the EOS alone, as generation ended)."""
    tok, out = pipe.enc.tokenizer, []
    for r in rows:
        ids = list(tok(r["response"], add_special_tokens=False)["input_ids"]) if r["response"] else []
        out.append((pipe.enc.prompt_ids(r["prompt"], r["id"]), pipe.enc.cap_response(ids + [tok.eos_token_id])))
    return out


@register_evaluator
class TeacherKL(Evaluator):
    name = "teacher_kl"
    version = "1"

    def evaluate(self, run, ctx: EvalContext) -> dict:
        from bench.config import RunConfig
        from bench.evaluators.run import checkpoint_dir, int_setting, resolve_device
        from bench.models import load_model
        from bench.pipeline import Pipeline

        pipe = Pipeline(RunConfig(**{**run.manifest["config"], "eval_suite": ()}))
        rows = run.generations()
        n = int_setting(ctx.settings, "teacher_kl_n", None, minimum=1)
        rows = rows[:n] if n else rows
        if not rows:
            raise BenchError(f"{run.path}/generations.jsonl is empty; rerun `bench run` to generate test responses")
        teacher_dir = pipe.built_path("dpo_teacher")
        if teacher_dir is None:
            if not _bool(ctx.settings.get("teacher_kl_build", False)):
                raise BenchError(f"teacher_kl needs the DPO teacher of run {run.path.name}, which is not in the cache "
                                 f"({pipe.teacher} on {pipe.bundle.name}); run any distillation method on this pair "
                                 "first, or pass --set teacher_kl_build=true to train it")
            teacher_dir = str(pipe.model_dir("dpo_teacher"))
        pairs = response_pairs(pipe, rows)
        device = resolve_device(ctx.settings)
        teacher = load_model(teacher_dir).to(device)
        student = (ctx.settings.get("model") or load_model(checkpoint_dir(run))).to(device)
        pad = pipe.tok.pad_token_id
        score, tokens = mean_value_kl(teacher, student, pairs, pad, 1.0, pipe.infer_bs)
        out = {"score": score, "tokens": tokens, "n": len(pairs)}
        sref_dir = pipe.built_path("sft_student")
        if sref_dir is not None:
            out["sft_student"] = mean_value_kl(teacher, load_model(sref_dir).to(device), pairs, pad, 1.0,
                                               pipe.infer_bs)[0]
        return out

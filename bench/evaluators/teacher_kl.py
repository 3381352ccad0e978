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
from bench.evaluators.value_kl import kl_report, run_pipeline_of


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
        from bench.scoring.runtime import int_setting

        pipe = run_pipeline_of(run)
        rows = run.generations()
        n = int_setting(ctx.settings, "teacher_kl_n", None, minimum=1)
        rows = rows[:n] if n else rows
        if not rows:
            raise BenchError(f"{run.path}/generations.jsonl is empty; rerun `bench run` to generate test responses")
        return kl_report("teacher_kl", run, ctx, pipe, response_pairs(pipe, rows), 1.0)

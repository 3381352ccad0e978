"""Value alignment (TVKD, Kwon et al. 2025, "Preference Distillation via Value-Based Reinforcement Learning",
Table 4): how close the trained student's value function is to the DPO teacher's, on the chosen responses of the
training prompts. An analysis metric, not a loss. Lower is better.

What could be established of the paper's wording: Table 4 compares, across methods, the KL divergence between the
teacher's and the student's value functions, measured on the chosen responses of the training prompts. The
table's own text and formula could not be read here (only the abstract and introduction of arXiv 2509.16965 were
reachable, and the authors' released code has no analysis script for it), so the exact definition is pinned here,
in the paper's soft-RL view of a language model (logits as soft Q-values, Q(s, a) = z(s, a); soft value
V(s) = τ·logsumexp(z(s)/τ)):

    value_kl = (1/N) Σ_{(x, y_w) ∈ pref_train} Σ_{t=1..|y_w|} KL( π^τ_dpo(·|s_t) ‖ π^τ_θ(·|s_t) ),
    π^τ(a|s) = exp((Q(s, a) − V(s)) / τ) = softmax(z(s)/τ)_a,           s_t = (x, y_w,<t),

N = the number of chosen-response tokens (a token mean over every state, full vocabulary, float64 accumulation).
Why this KL: a soft value is fixed by the logits only up to a per-state constant (the softmax is shift-invariant),
so two models' V(s) are not comparable as numbers; the Boltzmann distribution of (Q, V) is their offset-free part,
and its KL is 0 exactly when the two soft advantages Q − V agree at s. Direction: teacher first (forward KL).
τ = the run preset's value temperature (`tau`, 2.0 = TVKD's; the same for every run, so runs compare);
`value_kl_tau` overrides it. `value_kl_n` evaluates the first n training examples only (default: all).

Also reported: `sft_student`, the same quantity for the SFT student π_sref (every method's initialisation), when it
is in the cache, so a run's number reads as a change from where it started; `tokens`, `n` (sequences), `tau`.
The DPO teacher must be in the stage cache (any distillation run builds it); `value_kl_build=true` trains it if not.
"""
from __future__ import annotations

import torch

from bench.errors import BenchError
from bench.evaluators import register_evaluator
from bench.evaluators.base import EvalContext, Evaluator
from bench.modeling.forward import packed_forward, pad_batch
from bench.tensors import full_kl


@torch.no_grad()
def mean_value_kl(teacher, student, pairs: list[tuple[list[int], list[int]]], pad_id: int, tau: float,
                  batch_size: int = 16) -> tuple[float, int]:
    """(token-mean KL(softmax(z_T/τ) ‖ softmax(z_S/τ)) over every response position, number of positions)."""
    teacher.eval()
    student.eval()
    total, n = torch.zeros((), dtype=torch.float64), 0
    for start in range(0, len(pairs), batch_size):
        batch = pad_batch(pairs[start:start + batch_size], pad_id)
        pt, ps = packed_forward(teacher, batch), packed_forward(student, batch)
        if pt.vocab != ps.vocab:
            raise BenchError(f"teacher and student logits differ in width ({pt.vocab} vs {ps.vocab}); "
                             "value_kl needs one vocabulary")
        if pt.labels.device != ps.labels.device:  # models on two devices: dense logits, moved
            pt, ps = pt.dense_logits(), ps.dense_logits().to(pt.labels.device)
        kl = full_kl(pt, ps, tau)  # chunked over the rows: never both models' [N, V] logits at once
        total += kl.double().sum().cpu()
        n += kl.numel()
    return (float(total) / n if n else float("nan")), n


def _bool(value) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def run_pipeline_of(run):
    from bench.config import RunConfig
    from bench.pipeline.graph import Pipeline

    return Pipeline(RunConfig(**{**run.manifest["config"], "eval_suite": ()}))


def kl_report(name: str, run, ctx: EvalContext, pipe, pairs, tau: float) -> dict:
    """{score, tokens, n[, sft_student]}: the mean KL of the run's DPO teacher to its checkpoint (and to the SFT
    student, when cached) over `pairs` at `tau`. The teacher must be cached unless `<name>_build` is set."""
    from bench.modeling.models import load_model
    from bench.scoring.runtime import checkpoint_dir, resolve_device

    teacher_dir = pipe.built_path("dpo_teacher")
    if teacher_dir is None:
        if not _bool(ctx.settings.get(f"{name}_build", False)):
            raise BenchError(f"{name} needs the DPO teacher of run {run.path.name}, which is not in the cache "
                             f"({pipe.teacher} on {pipe.bundle.name}); run any distillation method on this pair "
                             f"first, or pass --set {name}_build=true to train it")
        teacher_dir = str(pipe.model_dir("dpo_teacher"))
    device, pad = resolve_device(ctx.settings), pipe.tok.pad_token_id
    teacher = load_model(teacher_dir).to(device)
    student = (ctx.settings.get("model") or load_model(checkpoint_dir(run))).to(device)
    score, tokens = mean_value_kl(teacher, student, pairs, pad, tau, pipe.infer_bs)
    out = {"score": score, "tokens": tokens, "n": len(pairs)}
    sref_dir = pipe.built_path("sft_student")
    if sref_dir is not None:
        out["sft_student"] = mean_value_kl(teacher, load_model(sref_dir).to(device), pairs, pad, tau,
                                           pipe.infer_bs)[0]
    return out


@register_evaluator
class ValueKL(Evaluator):
    name = "value_kl"
    version = "1"

    def evaluate(self, run, ctx: EvalContext) -> dict:
        from bench.scoring.runtime import int_setting

        pipe = run_pipeline_of(run)
        tau = float(ctx.settings.get("value_kl_tau") or pipe.tau)
        if not tau > 0:
            raise BenchError(f"value_kl_tau={tau} is invalid; it must be > 0")
        pairs = pipe.side_pairs("pref_train", "chosen", {})
        n = int_setting(ctx.settings, "value_kl_n", None, minimum=1)
        pairs = pairs[:n] if n else pairs
        return {**kl_report("value_kl", run, ctx, pipe, pairs, tau), "tau": tau}

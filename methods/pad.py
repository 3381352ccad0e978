"""PAD, Preference-Aligned Distillation (Gu et al., Findings of ACL 2025, "Capturing Nuanced Preferences:
Preference-Aligned Distillation for Small Language Models", arXiv 2502.14272; code EganGu/PAD):

    r(y) = (1/|y|) Σ_t log π(y_t | x, y_<t)                      (intrinsic reward: length-normalised log-likelihood)
    P_π(τ) = Π_{i=1..K} exp(β r(y_τi)) / Σ_{j≥i} exp(β r(y_τj))   (Plackett-Luce over the K! rankings τ)
    loss = mean_x JSD(P_θ || P_T)                                 (the student's ranking distribution toward the
                                                                   teacher's, over K responses of the same prompt)

The K responses are sampled from the student (the SFT student π_sref) at temperature T, once, as a cached stage
(`sample:sft_student:K:T:j`, built on the pair-making stage's sampler); r_T comes from the teacher's cached token
log-probs on them, r_θ from the policy's.

Defaults and deviations (the authors' code, snapshot 89f2a91, `scripts/simpo_trainer.py`; docs/notes/PAD.md):
- K = 4 responses (`pipeline_n4_gemma.sh` L11), temperature 1.0 (`data_gen/scripts/sampling.sh` L10-19), β = 10
  (`training_configs/gemma-2-2b-it-pd.yaml` L18), the same β on both sides (simpo_trainer.py L916-917).
- The authors sample 5 responses and keep 4 by max-min Levenshtein distance (`agg.py` L20-40), dropping prompts
  whose 4 are not distinct, and train only on prompts whose teacher MCQ scores straddle 0.5 (`run_pad.py` L99-102):
  here the K samples are used as drawn, every prompt kept.
- Teacher reward: the paper's intrinsic reward (average log-likelihood; α = 1 in the code's
  r_T = α·avglogp + (1−α)·mcq). The released config uses α = 0, the teacher's answer to 2-option multiple-choice
  prompts (`prob.py` L78-136), which needs the teacher to judge pairs in a prompt format; not built.
- Divergence: `jsd` is the paper's Jensen-Shannon divergence ½KL(P_θ||M) + ½KL(P_T||M), M = ½(P_θ + P_T);
  `authors_code` is what `jenson_shannon_divergence` (L876-891) computes: ½KL(M||P_θ) + ½KL(M||P_T), with M per
  prompt (the code's logsumexp over the whole micro-batch mixes prompts when the batch holds more than one, L886;
  not reproduced).
- Teacher π_dpo (the aligned teacher; the paper's gemma-2-9b-it), π_ref as an option.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import torch

from bench.method import LossBatch, Method, MethodConfig, SignalSpec, sample_side, setting
from bench.tensors import seg_mean

MAX_K = 7  # K! rankings per prompt: 5040 at K = 7


def plackett_luce_logprobs(scores: torch.Tensor) -> torch.Tensor:
    """log P(τ) of every ranking τ of K items under Plackett-Luce with the given scores [B, K] → [B, K!] (rankings
    in itertools.permutations order)."""
    K = scores.shape[-1]
    perms = torch.tensor(list(itertools.permutations(range(K))), device=scores.device)  # [K!, K]
    s = scores[:, perms]  # [B, K!, K]: the scores in ranked order
    tail_lse = torch.logcumsumexp(s.flip(-1), dim=-1).flip(-1)  # lse over the items not yet ranked, at each stage
    return (s - tail_lse).sum(-1)


def ranking_divergence(lp_s: torch.Tensor, lp_t: torch.Tensor, form: str) -> torch.Tensor:
    """Per prompt: the paper's JSD(P_S || P_T), or the authors' code form ½KL(M||P_S) + ½KL(M||P_T) [B]."""
    logm = torch.logaddexp(lp_s, lp_t) - math.log(2.0)
    if form == "jsd":
        return 0.5 * (lp_s.exp() * (lp_s - logm)).sum(-1) + 0.5 * (lp_t.exp() * (lp_t - logm)).sum(-1)
    m = logm.exp()
    return 0.5 * (m * (logm - lp_s)).sum(-1) + 0.5 * (m * (logm - lp_t)).sum(-1)


def pad_loss(student_r: torch.Tensor, teacher_r: torch.Tensor, beta: float, form: str) -> torch.Tensor:
    """Mean over prompts of the divergence between the two Plackett-Luce ranking distributions ([B, K] rewards)."""
    lp_s = plackett_luce_logprobs(beta * student_r)
    lp_t = plackett_luce_logprobs(beta * teacher_r.to(lp_s.dtype))
    return ranking_divergence(lp_s, lp_t, form).mean()


@dataclass
class PADConfig(MethodConfig):
    samples: int = setting(4, "authors' code (pipeline_n4_gemma.sh, K = 4)", "K responses per prompt (2..7)",
                           min=2, max=MAX_K)
    temperature: float = setting(1.0, "authors' code (sampling.sh, temperature 1.0)",
                                 "temperature of the student's samples", above=0.0)
    beta: float = setting(10.0, "authors' config (gemma-2-2b-it-pd.yaml L18)", "β scaling both rewards", min=0.0)
    divergence: str = setting("jsd", "paper (JSD); authors_code = simpo_trainer.py L876-891",
                              "JSD of the paper or the authors' code form", choices=("jsd", "authors_code"))
    teacher: str = setting("dpo_teacher", "paper (the aligned teacher); option π_ref", "teacher whose log-likelihood "
                           "ranks the samples", choices=("dpo_teacher", "ref_teacher"))


class PAD(Method):
    """The student's Plackett-Luce ranking distribution over K own samples, toward the teacher's (JSD)."""

    name = "pad"
    display_name = "PAD"
    citation = "Gu et al. 2025, Capturing Nuanced Preferences: Preference-Aligned Distillation for Small LMs"
    config_cls = PADConfig

    def sides(self, cfg):
        return tuple(sample_side("sft_student", cfg.samples, float(cfg.temperature), j) for j in range(cfg.samples))

    def signals(self, cfg):
        return [SignalSpec(cfg.teacher, side, "logps") for side in self.sides(cfg)]

    def loss(self, batch: LossBatch, cfg):
        sides = self.sides(cfg)
        r_s = torch.stack([seg_mean(batch.policy[s].token_logps(), batch.policy[s].seg, batch.policy[s].n_seq)
                           for s in sides], -1)
        r_t = torch.stack([seg_mean(batch.signal(cfg.teacher, "logps", s)["logps"], batch.policy[s].seg,
                                    batch.policy[s].n_seq) for s in sides], -1)
        loss = pad_loss(r_s, r_t, cfg.beta, cfg.divergence)
        agree = (r_s.argmax(-1) == r_t.argmax(-1)).float().mean()
        return loss, {"pad": loss.item(), "top1_agree": agree.item()}

"""AlignDistil's token-level target, computed once from two teachers and cached (signal kind `contrast`).

At each response position t, with z_d the DPO teacher's logits and z_r the reverse-DPO teacher's (Zhang et al.
2025; the authors' code, `aligndistil_offpolicy_trainer.py` L215-221, docs/notes/AlignDistil.md):

    a_t  = β₂ · Σ_v |p_d(v) − p_r(v)| + 10⁻³          (adaptive extrapolation: the two teachers' L1 distance)
    z*_t = z_d + a_t · (z_d − z_r)                     (logits extrapolated away from the reverse model)
    p*_t = softmax(z*_t / T)

The entry stores p*'s top-k (int32 ids, float32 log-probs), the log of the mass outside them (`log_tail`, a
logsumexp: the extrapolated target is often so peaked that its tail is below float32's resolution as a probability,
and the reverse KL needs its log) and `weight` = a_t [N]; the student's loss is (β / a_t)·KL(π_θ || p*) over the
k+1 bins.
"""
from __future__ import annotations

import torch

from bench.modeling.forward import packed_forward, pad_batch
from bench.progress import progress_bar
from bench.signals.compute import FORWARD_PASSES

CONTRAST_FIELDS = ("topk_ids", "topk_logps", "log_tail", "weight")


def contrast_rows(z_d: torch.Tensor, z_r: torch.Tensor, k: int, beta2: float, temperature: float
                  ) -> dict[str, torch.Tensor]:
    """The composed target's top-k signal and a_t for rows of the two teachers' logits [N, V] (float32 at least)."""
    z_d, z_r = z_d.double(), z_r.double()
    l1 = (torch.softmax(z_d, -1) - torch.softmax(z_r, -1)).abs().sum(-1)
    a = beta2 * l1 + 1e-3
    logp = torch.log_softmax((z_d + a[:, None] * (z_d - z_r)) / temperature, -1)
    top, ids = logp.topk(k, dim=-1)
    log_tail = torch.logsumexp(logp.scatter(-1, ids, float("-inf")), -1)
    return {"topk_ids": ids.to(torch.int32), "topk_logps": top.float(), "log_tail": log_tail.float(),
            "weight": a.float()}


@torch.no_grad()
def compute_contrast(model_d, model_r, pairs: list[tuple[list[int], list[int]]], writer, *, k: int, beta2: float,
                     temperature: float, pad_id: int, batch_size: int, model_keys: tuple[str, str], desc: str
                     ) -> tuple[int, int]:
    """Fill `writer` (one add per example, in order) with the composed target; returns (tokens, passes)."""
    model_d.eval()
    model_r.eval()
    tokens = passes = 0
    with progress_bar(desc, total=len(pairs), unit="seq") as bar:
        for start in range(0, len(pairs), batch_size):
            chunk = pairs[start:start + batch_size]
            batch = pad_batch(chunk, pad_id)
            z_d = packed_forward(model_d, batch, chunked=False).logits
            z_r = packed_forward(model_r, batch, chunked=False).logits
            for key in model_keys:
                FORWARD_PASSES[key] += 1
            passes += 2
            tokens += batch.n_tokens
            rows = contrast_rows(z_d, z_r, k, beta2, temperature)
            row = 0
            for _, resp in chunk:
                sl = slice(row, row + len(resp))
                writer.add(**{name: rows[name][sl].cpu() for name in CONTRAST_FIELDS})
                row += len(resp)
            bar.advance(len(chunk), tokens=batch.n_tokens)
    return tokens, passes

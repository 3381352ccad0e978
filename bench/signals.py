"""Compute a model's per-token signals over one side of a split (one forward pass, every kind at once)."""
from __future__ import annotations

from collections import Counter

import torch

from bench.forward import pad_batch, packed_forward
from bench.progress import progress_bar

# Forward passes made by signal computation, by model key (tests use it to prove cache reuse).
FORWARD_PASSES: Counter = Counter()


def topk_signal(logits: torch.Tensor, k: int) -> dict[str, torch.Tensor]:
    logp = torch.log_softmax(logits.float(), dim=-1)
    vals, ids = logp.topk(min(k, logp.shape[-1]), dim=-1)
    tail = (1.0 - vals.exp().sum(-1)).clamp(min=0.0)
    return {"topk_ids": ids.to(torch.int32), "topk_logps": vals.to(torch.float16), "tail": tail.float()}


def value_signal(logits: torch.Tensor, next_ids: torch.Tensor, tau: float) -> dict[str, torch.Tensor]:
    """Per-state scalars of the logits z: soft value τ·lse(z/τ), lse, max, E_π[z], top1−top2 margin, z[next]."""
    z = logits.float()
    lse = torch.logsumexp(z, -1)
    top2 = z.topk(2, dim=-1).values
    z_label = torch.full_like(lse, float("nan"))
    has_next = next_ids >= 0
    z_label[has_next] = z[has_next].gather(-1, next_ids[has_next, None]).squeeze(-1)
    return {
        "v_soft": tau * torch.logsumexp(z / tau, -1), "v_lse": lse, "v_max": top2[:, 0],
        "v_expect": (torch.softmax(z, -1) * z).sum(-1), "v_margin": top2[:, 0] - top2[:, 1], "z_label": z_label,
    }


@torch.no_grad()
def compute_side_signals(model, pairs: list[tuple[list[int], list[int]]], writers: dict, *, k: int, tau: float,
                         pad_id: int, batch_size: int, model_key: str, desc: str) -> None:
    """Fill the cache writers with topk / logps / values for each (prompt_ids, response_ids) pair, in order."""
    model.eval()
    with progress_bar(desc, total=len(pairs), unit="seq") as bar:
        for start in range(0, len(pairs), batch_size):
            chunk = pairs[start:start + batch_size]
            batch = pad_batch(chunk, pad_id)
            packed, final = packed_forward(model, batch, with_final=True)
            FORWARD_PASSES[model_key] += 1
            tk = topk_signal(packed.logits, k)
            lp = packed.token_logps().float()
            row = 0
            for b, (_, resp) in enumerate(chunk):
                T = len(resp)
                sl = slice(row, row + T)
                writers["topk"].add(**{n: t[sl].cpu() for n, t in tk.items()})
                writers["logps"].add(logps=lp[sl].cpu())
                states = torch.cat([packed.logits[sl], final[b:b + 1]])
                nxt = torch.tensor(list(resp) + [-1], device=states.device)
                writers["values"].add(**{n: t.cpu() for n, t in value_signal(states, nxt, tau).items()})
                row += T
            bar.advance(len(chunk), tokens=batch.n_tokens)

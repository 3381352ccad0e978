"""Hand-built loss inputs shared by the seed-method loss tests (no model involved)."""
from __future__ import annotations

import torch

from bench.tensors import Packed


def packed(lengths, V, gen, scale=2.0) -> Packed:
    """Random float64 policy rows (with grad) for sequences of the given lengths."""
    n = sum(lengths)
    seg = torch.repeat_interleave(torch.arange(len(lengths)), torch.tensor(lengths))
    return Packed(logits=(torch.randn(n, V, generator=gen, dtype=torch.float64) * scale).requires_grad_(True),
                  labels=torch.randint(0, V, (n,), generator=gen), seg=seg, n_seq=len(lengths))


def topk_signal(teacher_logits: torch.Tensor, k: int) -> dict[str, torch.Tensor]:
    """Cache-like top-k signal: int32 ids, float16 log-probs, float32 tail."""
    vals, ids = torch.log_softmax(teacher_logits.double(), -1).topk(k, dim=-1)
    vals = vals.half()
    tail = (1 - vals.double().exp().sum(-1)).clamp(min=0).float()
    return {"topk_ids": ids.int(), "topk_logps": vals, "tail": tail}

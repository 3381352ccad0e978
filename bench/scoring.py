"""Scores shared by validation (checkpoint selection) and the evaluators: verified checker score, reward accuracy."""
from __future__ import annotations

from collections import defaultdict

import torch

from bench.errors import BenchError
from bench.forward import pad_batch, packed_forward
from bench.tensors import seg_mean


def verified_scores(rows: list[dict], responses: list[str]) -> dict:
    """Mean checker score of responses to embedded-suite prompts, overall and per family."""
    from bench.suite import FAMILIES, score_response

    if any(r.get("meta", {}).get("family") not in FAMILIES for r in rows):
        raise BenchError("the verified score needs embedded-suite prompts (rows whose meta.family has a checker); "
                         "use --set select_by=rm or reward_accuracy for other datasets")
    per = defaultdict(list)
    for r, resp in zip(rows, responses):
        per[r["meta"]["family"]].append(score_response(r["meta"], resp))
    allv = [v for vs in per.values() for v in vs]
    return {"score": sum(allv) / max(len(allv), 1), "n": len(allv),
            "per_family": {f: sum(v) / len(v) for f, v in sorted(per.items())}}


@torch.no_grad()
def mean_logps(model, pairs: list[tuple[list[int], list[int]]], pad_id: int, batch_size: int = 16) -> torch.Tensor:
    """Length-normalised log-prob of each response under the model."""
    model.eval()
    out = []
    for s in range(0, len(pairs), batch_size):
        b = pad_batch(pairs[s:s + batch_size], pad_id)
        p = packed_forward(model, b)
        out.append(seg_mean(p.token_logps(), p.seg, p.n_seq).cpu())
    return torch.cat(out) if out else torch.zeros(0)


def reward_accuracy(model, chosen, rejected, pad_id: int, batch_size: int = 16) -> dict:
    """Share of pairs whose chosen response has the higher mean log-prob (the papers' reward accuracy)."""
    if not chosen:
        raise BenchError("reward accuracy needs preference validation pairs (pref_val is empty)")
    lw, ll = mean_logps(model, chosen, pad_id, batch_size), mean_logps(model, rejected, pad_id, batch_size)
    return {"score": float((lw > ll).float().mean()), "n": len(chosen), "margin": float((lw - ll).mean())}

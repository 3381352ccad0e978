"""Scores shared by validation (checkpoint selection) and the evaluators: verified checker score, reward accuracy."""
from __future__ import annotations

from collections import defaultdict

import torch

from bench.errors import BenchError
from bench.modeling.forward import packed_forward, pad_batch
from bench.tensors import seg_mean


def verified_scores(rows: list[dict], responses: list[str], items: bool = False) -> dict:
    """Mean checker score of responses to embedded-suite prompts, overall and per family; with `items`, also each
    prompt's score by row id (what confidence intervals over prompts and paired tests need). `house_style`: the
    share of the styled prompts (each family's last template) answered in the SFT demonstrator's house style, the
    failure mode only the preference data corrects (`styled_n` of them; None when there are none)."""
    from bench.data.suite import FAMILIES, score_response

    if any(r.get("meta", {}).get("family") not in FAMILIES for r in rows):
        raise BenchError("the verified score needs embedded-suite prompts (rows whose meta.family has a checker); "
                         "use --set select_by=rm or reward_accuracy for other datasets")
    per, by_id, styled = defaultdict(list), {}, []
    for r, resp in zip(rows, responses):
        s = score_response(r["meta"], resp)
        per[r["meta"]["family"]].append(s)
        by_id[str(r.get("id"))] = s
        fam = FAMILIES[r["meta"]["family"]]
        if fam.is_styled(r["meta"]):
            styled.append(fam.is_house_style(r["meta"], resp))
    allv = [v for vs in per.values() for v in vs]
    out = {"score": sum(allv) / max(len(allv), 1), "n": len(allv),
           "per_family": {f: sum(v) / len(v) for f, v in sorted(per.items())},
           "house_style": sum(styled) / len(styled) if styled else None, "styled_n": len(styled)}
    if items:
        out["items"] = by_id
    return out


@torch.no_grad()
def pair_side_scores(rows: list[dict]) -> dict:
    """Mean checker score of the chosen and of the rejected responses of embedded-suite preference rows, overall and
    per family: {"chosen": {"score", "per_family"}, "rejected": {...}} (the true quality of a pair set)."""
    from bench.data.suite import score_response

    out = {}
    for side in ("chosen", "rejected"):
        scores = [(r["meta"]["family"], score_response(r["meta"], r[side])) for r in rows]
        fams = sorted({f for f, _ in scores})
        out[side] = {"score": sum(s for _, s in scores) / len(scores),
                     "per_family": {f: sum(s for g, s in scores if g == f) / sum(g == f for g, _ in scores)
                                    for f in fams}}
    return out


@torch.no_grad()
def mean_logps(model, pairs: list[tuple[list[int], list[int]]], pad_id: int, batch_size: int = 16) -> torch.Tensor:
    """Length-normalised log-prob of each response under the model (evaluation: no graph is kept)."""
    model.eval()
    out = []
    for s in range(0, len(pairs), batch_size):
        b = pad_batch(pairs[s:s + batch_size], pad_id)
        p = packed_forward(model, b)
        out.append(seg_mean(p.token_logps(), p.seg, p.n_seq).cpu())
    return torch.cat(out) if out else torch.zeros(0)


def reward_accuracy(model, chosen, rejected, pad_id: int, batch_size: int = 16, ids: list[str] | None = None) -> dict:
    """Share of pairs whose chosen response has the higher mean log-prob (the papers' reward accuracy); with `ids`,
    also each pair's outcome (1/0) by row id."""
    if not chosen:
        raise BenchError("reward accuracy needs preference validation pairs (pref_val is empty)")
    lw, ll = mean_logps(model, chosen, pad_id, batch_size), mean_logps(model, rejected, pad_id, batch_size)
    out = {"score": float((lw > ll).float().mean()), "n": len(chosen), "margin": float((lw - ll).mean())}
    if ids is not None:
        out["items"] = {str(i): float(w > l) for i, w, l in zip(ids, lw.tolist(), ll.tolist())}
    return out

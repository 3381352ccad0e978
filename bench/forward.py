"""Forward passes that apply the LM head only where a loss (or a value) is needed.

`pad_batch` right-pads (prompt, response) pairs; `packed_forward` runs the model body once and the LM head on
the response-predicting positions only (plus, with `with_final=True`, the state after the last token).
On a 49k vocabulary the head over whole prompts is a large share of the FLOPs; this skips it.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from bench.tensors import Packed


@dataclass
class PaddedBatch:
    input_ids: torch.Tensor  # [B, L]
    attention_mask: torch.Tensor  # [B, L]
    row_b: torch.Tensor  # [N] batch index of each response token
    row_pos: torch.Tensor  # [N] position whose logits predict it
    labels: torch.Tensor  # [N]
    final_pos: torch.Tensor  # [B] position of the last token (state after the response)
    n_seq: int

    @property
    def n_tokens(self) -> int:
        return int(self.attention_mask.sum())


def pad_batch(pairs: list[tuple[list[int], list[int]]], pad_id: int) -> PaddedBatch:
    lengths = [len(p) + len(r) for p, r in pairs]
    L = max(lengths)
    ids = torch.full((len(pairs), L), pad_id, dtype=torch.long)
    mask = torch.zeros((len(pairs), L), dtype=torch.long)
    row_b, row_pos, labels, final = [], [], [], []
    for b, (p, r) in enumerate(pairs):
        seq = p + r
        ids[b, : len(seq)] = torch.tensor(seq)
        mask[b, : len(seq)] = 1
        P, T = len(p), len(r)
        row_b += [b] * T
        row_pos += list(range(P - 1, P + T - 1))
        labels += r
        final.append(P + T - 1)
    return PaddedBatch(ids, mask, torch.tensor(row_b), torch.tensor(row_pos), torch.tensor(labels),
                       torch.tensor(final), len(pairs))


def body(model):
    """The transformer body (without LM head) of a causal LM."""
    return getattr(model, model.base_model_prefix)


def hidden_states(model, batch: PaddedBatch) -> torch.Tensor:
    dev = next(model.parameters()).device
    out = body(model)(input_ids=batch.input_ids.to(dev), attention_mask=batch.attention_mask.to(dev), use_cache=False)
    return out.last_hidden_state


def packed_forward(model, batch: PaddedBatch, with_final: bool = False):
    """Packed logits of the response tokens; with_final also returns the [B, V] logits after the last token."""
    h = hidden_states(model, batch)
    dev = h.device
    head = model.get_output_embeddings()
    rows = h[batch.row_b.to(dev), batch.row_pos.to(dev)]
    packed = Packed(logits=head(rows).float(), labels=batch.labels.to(dev), seg=batch.row_b.to(dev),
                    n_seq=batch.n_seq)
    if not with_final:
        return packed
    final = head(h[torch.arange(batch.n_seq, device=dev), batch.final_pos.to(dev)]).float()
    return packed, final

"""Forward passes that apply the LM head only where a loss (or a value) is needed.

`pad_batch` right-pads (prompt, response) pairs; `packed_forward` runs the model body once and keeps the hidden
states of the response-predicting positions only (plus, with `with_final=True`, the logits of the state after the
last token). On a 49k vocabulary the head over whole prompts is a large share of the FLOPs; this skips it. The LM
head itself is applied later, chunk by chunk, by the loss helpers (`bench.head`): the returned Packed holds no
[N, V] logits (`chunked=False` gives the dense logits, for tests and comparisons).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from bench.head import HeadRows, low_precision_for
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


def hidden_states(model, batch: PaddedBatch, runner=None) -> torch.Tensor:
    """The body's last hidden states; through `runner` (a data-parallel wrapper of the body, bench.train.parallel) when
    one is given, so that its gradient sync sees the forward."""
    dev = next(model.parameters()).device
    ids, mask = batch.input_ids.to(dev), batch.attention_mask.to(dev)
    if runner is not None:
        return runner(ids, mask)
    return body(model)(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state


def head_of(model):
    """(weight [V, D], bias) of the model's LM head when it is a plain linear map (None otherwise, e.g. a head
    sharded by FSDP/ZeRO-3, which must be called as a module: then the dense path is used)."""
    head = model.get_output_embeddings()
    if isinstance(head, torch.nn.Linear) and head.weight.dim() == 2 and head.weight.numel() > 0:
        return head.weight, head.bias
    return None


def packed_forward(model, batch: PaddedBatch, with_final: bool = False, chunked: bool = True, runner=None):
    """The response rows of a batch as a Packed: chunked (hidden states + LM head, no [N, V] logits) by default,
    dense logits with chunked=False. with_final also returns the [B, V] logits after the last token."""
    h = hidden_states(model, batch, runner)
    dev = h.device
    head = model.get_output_embeddings()
    rows = h[batch.row_b.to(dev), batch.row_pos.to(dev)]
    labels, seg = batch.labels.to(dev), batch.row_b.to(dev)
    wb = head_of(model) if chunked else None
    if wb is not None:
        packed = Packed.from_head(HeadRows(rows, *wb, low=low_precision_for(dev)), labels, seg, batch.n_seq)
    else:
        z = head(rows)
        packed = Packed(logits=z.to(torch.promote_types(z.dtype, torch.float32)), labels=labels, seg=seg,
                        n_seq=batch.n_seq)
    if not with_final:
        return packed
    h_final = h[torch.arange(batch.n_seq, device=dev), batch.final_pos.to(dev)]
    final = HeadRows(h_final, *wb, low=low_precision_for(dev)).dense() if wb is not None else head(h_final).float()
    return packed, final

"""A teacher-signal pass sharded over the processes of `accelerate launch`, with one cache entry as the result.

Each process computes the signals of a contiguous run of whole batches (the same batches, padded the same way, as
one process would use), and saves the raw per-example tensors to a part file in the entry's temp dir. Process 0
then feeds the parts, in order, to the entry's writers: the published entry is byte-identical to a one-process
pass. One process: exactly `compute_side_signals`.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from bench import dist
from bench.signals.compute import compute_side_signals


class _PartWriter:
    """Collects what a ShardWriter would get: per-example tensors of one kind."""

    def __init__(self):
        self.rows: list[dict[str, torch.Tensor]] = []

    def add(self, **tensors: torch.Tensor) -> None:
        self.rows.append({k: v.contiguous() for k, v in tensors.items()})


def _save_part(path: Path, parts: dict[str, _PartWriter], tokens: int, passes: int) -> None:
    data = {}
    for kind, w in parts.items():
        lengths = [next(iter(r.values())).shape[0] for r in w.rows]
        offsets = torch.zeros(len(lengths) + 1, dtype=torch.int64)
        offsets[1:] = torch.tensor(lengths, dtype=torch.int64).cumsum(0)
        data[f"{kind}/offsets"] = offsets
        for name in (w.rows[0] if w.rows else {}):
            data[f"{kind}/{name}"] = torch.cat([r[name] for r in w.rows])
    save_file(data, str(path), metadata={"tokens": str(tokens), "passes": str(passes)})


def _feed_part(path: Path, writers: dict) -> tuple[int, int]:
    with safe_open(str(path), framework="pt") as f:
        keys = set(f.keys())
        for kind, writer in writers.items():
            if f"{kind}/offsets" not in keys:
                continue
            offsets = f.get_tensor(f"{kind}/offsets").tolist()
            fields = {k.split("/", 1)[1]: f.get_tensor(k) for k in keys if k.startswith(f"{kind}/") and
                      not k.endswith("/offsets")}
            for a, b in zip(offsets, offsets[1:]):
                writer.add(**{name: t[a:b] for name, t in fields.items()})
        meta = f.metadata()
    return int(meta["tokens"]), int(meta["passes"])


def sharded_signals(model, pairs, writers: dict, *, batch_size: int, **kwargs) -> tuple[int, int]:
    """`compute_side_signals` over every process; returns (tokens, passes) of the whole pass on process 0."""
    if dist.world() == 1:
        return compute_side_signals(model, pairs, writers, batch_size=batch_size, **kwargs)
    w, r = dist.world(), dist.rank()
    n_batches = math.ceil(len(pairs) / batch_size)
    lo, hi = n_batches * r // w * batch_size, min(len(pairs), n_batches * (r + 1) // w * batch_size)
    parts = {kind: _PartWriter() for kind in writers}
    tokens, passes = compute_side_signals(model, pairs[lo:hi], parts, batch_size=batch_size, **kwargs)
    tmp = Path(next(iter(writers.values())).dir)
    _save_part(tmp / f".part-{r:05d}.safetensors", parts, tokens, passes)
    dist.barrier()  # every part is written
    if not dist.is_main():
        return tokens, passes
    tokens = passes = 0
    for i in range(w):
        part = tmp / f".part-{i:05d}.safetensors"
        t, p = _feed_part(part, writers)
        tokens, passes = tokens + t, passes + p
        part.unlink()
    return tokens, passes

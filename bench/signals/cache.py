"""Content-addressed teacher-signal cache: memory-mapped safetensors shards, written atomically.

One entry = one forward pass of one model over one side (chosen, rejected, a generation set) of one split,
keyed by (model key, token-data hash, tokenizer, k, τ, precision, format). It holds three kinds, each in its own
shards (logical fields; `bench.signals.codec` says how top-k rows are stored):
  topk   topk_ids int32 [N,k], topk_logps float16 [N,k], tail float32 [N]
         stored as uint16 ids + 15-bit packed log-probs, tail recomputed  (k=50: 194 bytes/token; was 304)
  logps  logps float32 [N]                                                    (4 bytes/token)
  values v_soft, v_lse, v_max, v_expect, v_margin, z_label float32 [N+B]      (24 bytes/state)
  xtok   a teacher of another tokenizer, projected onto the student's rows (bench.signals.xtok)
  contrast  AlignDistil's target composed from a DPO and a reverse-DPO teacher (bench.signals.contrast)
Rows are flat over examples; `offsets` ([n+1] int64, per shard) locate example i. Reading slices rows straight
from the memory-mapped file (`safe_open(...).get_slice`).
"""
from __future__ import annotations

from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from bench.errors import BenchError
from bench.signals.codec import decode_topk, encode_topk
from bench.signals.contrast import CONTRAST_FIELDS
from bench.signals.xtok import XTOK_FIELDS
from bench.store.integrity import read_json

MARKER = "manifest.json"

KIND_FIELDS = {
    "topk": ("topk_ids", "topk_logps", "tail"),
    "logps": ("logps",),
    "values": ("v_soft", "v_lse", "v_max", "v_expect", "v_margin", "z_label"),
    "xtok": XTOK_FIELDS,
    "contrast": CONTRAST_FIELDS,
}
STORED_FIELDS = {**KIND_FIELDS, "topk": ("topk_ids", "topk_codes")}
PASS_KINDS = ("topk", "logps", "values")  # what one model's signal pass writes (bench.signals.compute)


def encode(kind: str, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return encode_topk(tensors["topk_ids"], tensors["topk_logps"]) if kind == "topk" else tensors


def decode(kind: str, stored: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return decode_topk(stored) if kind == "topk" else stored


class ShardWriter:
    """Accumulates per-example tensors and flushes a shard file every `shard_size` examples."""

    def __init__(self, directory: Path, kind: str, shard_size: int):
        self.dir, self.kind, self.shard_size = directory, kind, shard_size
        self.buf: dict[str, list[torch.Tensor]] = {}  # logical fields (topk: ids and log-probs; the tail is derived)
        self.lengths: list[int] = []
        self.shards: list[dict] = []
        self.bytes = 0

    def add(self, **tensors: torch.Tensor) -> None:
        first = next(iter(tensors.values()))
        self.lengths.append(int(first.shape[0]))
        for name, t in tensors.items():
            self.buf.setdefault(name, []).append(t.contiguous())
        if len(self.lengths) >= self.shard_size:
            self.flush()

    def flush(self) -> None:
        if not self.lengths:
            return
        offsets = torch.zeros(len(self.lengths) + 1, dtype=torch.int64)
        offsets[1:] = torch.tensor(self.lengths).cumsum(0)
        data = encode(self.kind, {name: torch.cat(parts) for name, parts in self.buf.items()})
        data["offsets"] = offsets
        fname = f"{self.kind}-{len(self.shards):05d}.safetensors"
        save_file(data, str(self.dir / fname))
        self.bytes += sum(t.numel() * t.element_size() for k, t in data.items() if k != "offsets")
        self.shards.append({"file": fname, "examples": len(self.lengths), "rows": int(offsets[-1])})
        self.buf = {}
        self.lengths = []


class SignalEntry:
    """Read side of one cache entry."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.manifest = read_json(self.path / MARKER, "signal cache entry manifest",
                                  "run `bench cache verify --fix` to rebuild it")
        self._index: dict[str, list[tuple[int, object, torch.Tensor]]] = {}

    def _shards(self, kind: str):
        if kind not in self._index:
            if kind not in self.manifest["kinds"]:
                raise BenchError(f"signal cache entry {self.path} has no '{kind}' data; delete it and rerun")
            shards, start = [], 0
            for sh in self.manifest["kinds"][kind]["shards"]:
                handle = safe_open(str(self.path / sh["file"]), framework="pt")
                shards.append((start, handle, handle.get_tensor("offsets")))
                start += sh["examples"]
            self._index[kind] = shards
        return self._index[kind]

    def _stored(self, kind: str, i: int) -> dict[str, torch.Tensor]:
        for start, handle, offsets in reversed(self._shards(kind)):
            if i >= start:
                j = i - start
                a, b = int(offsets[j]), int(offsets[j + 1])
                return {name: handle.get_slice(name)[a:b] for name in STORED_FIELDS[kind]}
        raise IndexError(i)

    def example(self, kind: str, i: int) -> dict[str, torch.Tensor]:
        return decode(kind, self._stored(kind, i))

    def gather(self, kind: str, indices: list[int]) -> dict[str, torch.Tensor]:
        parts = [self._stored(kind, i) for i in indices]
        ids = [p["topk_ids"] for p in parts] if kind == "topk" else []
        if len({t.dtype for t in ids}) > 1:  # shards of one entry may store ids at different widths
            for p in parts:
                p["topk_ids"] = p["topk_ids"].to(torch.int32)
        return decode(kind, {name: torch.cat([p[name] for p in parts]) for name in STORED_FIELDS[kind]})


def bytes_per_token(entry: SignalEntry) -> dict[str, float]:
    m = entry.manifest
    return {kind: info["bytes"] / max(info["rows"], 1) for kind, info in m["kinds"].items()}


def write_entry(final: Path, key: dict, fill, shard_size: int = 4096) -> Path:
    """Build an entry in a temp dir with `fill(writers)` (which may return extra manifest fields), then rename it
    into place atomically (under the entry's lock, with a checksum of every shard in manifest.json; a corrupt entry
    is rebuilt: `bench.store.stages`)."""
    from bench.store.stages import ensure_published

    def build(tmp: Path) -> dict:
        writers = {kind: ShardWriter(tmp, kind, shard_size) for kind in KIND_FIELDS}
        extra = fill(writers)
        extra = extra if isinstance(extra, dict) else {}
        kinds = {}
        for kind, w in writers.items():
            w.flush()
            kinds[kind] = {"shards": w.shards, "bytes": w.bytes, "rows": sum(s["rows"] for s in w.shards)}
        return {"key": key, "kinds": kinds, **extra}

    return ensure_published(Path(final), build, marker=MARKER, what="signal cache entry", fault="signal-write")

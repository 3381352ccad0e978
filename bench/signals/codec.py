"""How a cached top-k signal is stored on disk (signal format 3) and read back.

Logical fields (what losses see): topk_ids int32 [N, k], topk_logps float16 [N, k] (≤ 0, each rounded toward −inf
from its float64 value, `bench.signals.compute.round_down_half`), tail float32 [N] = 1 − Σ exp(stored log-probs).

Stored fields, per row at k = 50 (format 2 took 304 bytes):
  topk_ids    uint16 when every id of the shard is < 65,536 (else int32)             100 bytes
  topk_codes  the 15 magnitude bits of each float16 log-prob (its sign bit is always set, log-probs being ≤ 0),
              bit-packed: ⌈15·k / 8⌉ bytes                                            94 bytes
  tail        not stored: recomputed on read from the decoded log-probs exactly as the writer derives it
                                                                                     = 194 bytes (+4 for logps)
The encoding is lossless with respect to the float16 values: decode(encode(x)) == x bit for bit (−0.0 for 0).
The only rounding in the cache is the float16 one, bounded in `bench.signals.compute` (one float16 step toward −inf:
|stored − exact| ≤ 2^-10·|exact| for |exact| ≥ 2^-14, ≤ 2^-24 below) and tested against the exact KL.
"""
from __future__ import annotations

import torch

LOGP_BITS = 15


def _pack_bits(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """[N, k] non-negative integers < 2^bits → [N, ⌈bits·k/8⌉] uint8, little-endian bit order."""
    n, k = codes.shape
    shifts = torch.arange(bits, dtype=torch.int32)
    b = ((codes.to(torch.int32)[..., None] >> shifts) & 1).to(torch.uint8).reshape(n, k * bits)
    nbytes = -(-k * bits // 8)
    b = torch.nn.functional.pad(b, (0, nbytes * 8 - k * bits)).reshape(n, nbytes, 8)
    return (b.to(torch.int32) << torch.arange(8, dtype=torch.int32)).sum(-1).to(torch.uint8)


def _unpack_bits(packed: torch.Tensor, bits: int, k: int) -> torch.Tensor:
    """Inverse of `_pack_bits`: [N, nbytes] uint8 → [N, k] int32."""
    n = packed.shape[0]
    b = (packed.to(torch.int32)[..., None] >> torch.arange(8, dtype=torch.int32)) & 1
    b = b.reshape(n, packed.shape[-1] * 8)[:, :k * bits].reshape(n, k, bits)
    return (b << torch.arange(bits, dtype=torch.int32)).sum(-1)


def encode_logps(logps: torch.Tensor) -> torch.Tensor:
    """float16 log-probs (≤ 0) [N, k] → packed 15-bit magnitudes [N, ⌈15k/8⌉] uint8."""
    if logps.dtype != torch.float16:
        raise ValueError("encode_logps takes the float16 log-probs of `bench.signals.compute.topk_signal`")
    if (logps > 0).any():
        raise ValueError("log-probs must be ≤ 0")
    mag = logps.view(torch.int16).to(torch.int32) & 0x7FFF
    return _pack_bits(mag, LOGP_BITS)


def decode_logps(codes: torch.Tensor) -> torch.Tensor:
    """Packed 15-bit magnitudes [N, B] → float16 log-probs [N, k] (k = ⌊8B / 15⌋)."""
    k = codes.shape[-1] * 8 // LOGP_BITS
    mag = _unpack_bits(codes, LOGP_BITS, k)
    return (mag - 0x8000).to(torch.int16).view(torch.float16)  # sign bit set: the int16 pattern 0x8000 | mag


def tail_of(logps: torch.Tensor) -> torch.Tensor:
    """The tail bin 1 − Σ exp(stored log-probs) [N], in float64 then float32 (the writer's and reader's rule)."""
    return (1.0 - logps.double().exp().sum(-1)).clamp(min=0.0).float()


def encode_topk(topk_ids: torch.Tensor, topk_logps: torch.Tensor) -> dict[str, torch.Tensor]:
    ids = topk_ids.to(torch.int64)
    if ids.numel() and (ids.min() < 0 or ids.max() >= 2**31):
        raise ValueError("top-k ids out of range")
    small = not ids.numel() or int(ids.max()) < 2**16
    return {"topk_ids": ids.to(torch.uint16 if small else torch.int32), "topk_codes": encode_logps(topk_logps)}


def decode_topk(stored: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    logps = decode_logps(stored["topk_codes"])
    return {"topk_ids": stored["topk_ids"].to(torch.int32), "topk_logps": logps, "tail": tail_of(logps)}

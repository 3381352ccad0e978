"""Training precision and activation checkpointing, two training settings (`student.train.precision`,
`student.train.grad_ckpt`, and the same keys of every stage in a run preset).

precision
  "fp32"  everything in float32.
  "bf16"  bfloat16 autocast for the model body (CPU autocast on a CPU, CUDA autocast on a GPU); master weights,
          optimizer state, the LM head (`bench.head`: autocast is off there, float32 logits from a float32 head),
          every loss and every cached signal stay float32 at least. Refused where bf16 is not supported.
  "auto"  "bf16" where the device supports it (a GPU with bf16, a CPU with AVX512-BF16/AMX), else "fp32".
Signals a stage reads (reference log-probs, teacher top-k and values) are computed with the body at the stage's
precision, so that a policy that equals its reference scores exactly like the cached reference.

grad_ckpt
  "off"        keep every activation.
  "full"       recompute every decoder layer in the backward (transformers' activation checkpointing).
  "selective"  recompute every other decoder layer (`every_n_layers=2`): about half the activation memory saved
               for about half the recompute cost.
"""
from __future__ import annotations

import contextlib
from functools import lru_cache

import torch

from bench.errors import BenchError

PRECISIONS = ("auto", "fp32", "bf16")
GRAD_CKPT = {"off": 0, "full": 1, "selective": 2}  # value: every_n_layers


@lru_cache(maxsize=None)
def bf16_supported(device_type: str) -> bool:
    if device_type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device_type == "cpu":
        try:
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):
            return False
    return False


def default_device_type() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_precision(setting: str, device_type: str | None = None) -> str:
    """"fp32" or "bf16" for a precision setting on this machine."""
    device_type = device_type or default_device_type()
    if setting not in PRECISIONS:
        raise BenchError(f"training setting precision={setting!r} is invalid; choose one of {', '.join(PRECISIONS)}")
    if setting == "auto":
        return "bf16" if bf16_supported(device_type) else "fp32"
    if setting == "bf16" and not bf16_supported(device_type):
        raise BenchError(f"precision='bf16' is not supported on this {device_type} (no bf16 kernels); use "
                         "precision=fp32 or auto")
    return setting


#: On a CPU under bf16 autocast, torch's fused (flash) attention kernel is slower than the plain math kernel for
#: short sequences (measured: fwd+bwd of 8×9 heads, head dim 64, L=140: 51 ms flash vs 26 ms math; L=256: 69 vs
#: 110 ms), and math's [B, H, L, L] scores stay small there; longer batches keep the fused kernel.
CPU_BF16_MATH_ATTENTION_MAX_LEN = 160


def autocast(precision: str, device_type: str | None = None, seq_len: int | None = None,
             weight_cache: bool = True):
    """The body's compute context for a resolved precision (a no-op for fp32): bf16 autocast, plus the attention
    kernel choice above when `seq_len` (the batch's padded length) is given. `weight_cache=False` does not keep
    the bf16 copies of the weights for the whole step (with activation checkpointing they are made again in the
    recompute; the cache would hold a bf16 copy of every weight until the step ends)."""
    if precision != "bf16":
        return contextlib.nullcontext()
    device_type = device_type or default_device_type()
    stack = contextlib.ExitStack()
    stack.enter_context(torch.autocast(device_type=device_type, dtype=torch.bfloat16, cache_enabled=weight_cache))
    if device_type == "cpu" and seq_len is not None and seq_len <= CPU_BF16_MATH_ATTENTION_MAX_LEN:
        from torch.nn.attention import SDPBackend, sdpa_kernel
        stack.enter_context(sdpa_kernel(SDPBackend.MATH))
    return stack


def set_grad_ckpt(model, mode: str) -> None:
    """Apply an activation-checkpointing mode to a transformers model (off / full / selective)."""
    if mode not in GRAD_CKPT:
        raise BenchError(f"training setting grad_ckpt={mode!r} is invalid; choose one of {', '.join(GRAD_CKPT)}")
    if mode == "off":
        if getattr(model, "is_activation_checkpointing", False):
            model.activation_checkpointing_disable()
        return
    if not getattr(model, "supports_gradient_checkpointing", False):
        raise BenchError(f"grad_ckpt={mode!r}: {type(model).__name__} does not support activation checkpointing")
    model.activation_checkpointing_enable({"use_reentrant": False}, every_n_layers=GRAD_CKPT[mode])

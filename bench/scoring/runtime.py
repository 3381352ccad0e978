"""What scorers and evaluators share: typed settings, device and dtype choice, a run's checked checkpoint, loading a
local HF model, batched greedy chat generation, and the content identity of a model path."""
from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.errors import BenchError


def setting(settings: dict, key: str, default: Any) -> Any:
    value = settings.get(key)
    return default if value is None else value


def int_setting(settings: dict, key: str, default: int | None, minimum: int = 0) -> int | None:
    value = settings.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool):
        raise BenchError(f"setting {key}={value!r} is not an integer; pass e.g. {key}={default}")
    try:
        ivalue = int(value)
        if ivalue != float(value):
            raise ValueError
    except (TypeError, ValueError):
        raise BenchError(f"setting {key}={value!r} is not an integer; pass e.g. {key}={default}") from None
    if ivalue < minimum:
        raise BenchError(f"setting {key}={value!r} must be >= {minimum}")
    return ivalue


def resolve_device(settings: dict) -> str:
    import torch

    device = str(settings.get("device") or "auto")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise BenchError(f"device={device} but no CUDA device is visible; use device=cpu")
    return device


def resolve_dtype(settings: dict, device: str):
    import torch

    name = str(settings.get("dtype") or "auto")
    if name == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    table = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if name not in table:
        raise BenchError(f"dtype={name!r} is not one of auto, {', '.join(table)}")
    return table[name]


def file_fingerprint(path: str | Path) -> str:
    """Content identity of a model directory or file (every file's digest, memoised by size and mtime)."""
    from bench.store.integrity import dir_content_hash, source_hash

    path = Path(path)
    if path.is_dir():
        return dir_content_hash(path)[:16]
    if path.is_file():
        return source_hash(path)[:16]
    return hashlib.sha256(str(path).encode()).hexdigest()[:16]  # a hub id: the name is all there is


def checkpoint_dir(run) -> Path:
    """The run's checkpoint folder, its files checked against the run's checksums before anything loads them."""
    path = run.checkpoint_path
    if not (path / "config.json").exists():
        raise BenchError(f"run {run.path} has no checkpoint/ (HF save_pretrained model); rerun `bench run` for it")
    run.verify(("checkpoint/",))
    return path


def load_causal_lm(path: str | Path, settings: dict):
    """(model, tokenizer, device) for a local HF directory, in eval mode, tokenizer padded on the left."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = resolve_device(settings)
    dtype = resolve_dtype(settings, device)
    try:
        tok = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    except OSError as e:
        raise BenchError(f"could not load the model in {path} ({type(e).__name__}); it must be an HF "
                         "save_pretrained directory with its tokenizer") from None
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    if not getattr(tok, "chat_template", None):
        raise BenchError(f"the tokenizer in {path} has no chat template; save the run's tokenizer with one")
    model.to(device).eval()
    return model, tok, device


def render_chat(tok, messages: list[dict]) -> str:
    return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def generate_chat(model, tok, conversations: Sequence[list[dict]], *, max_new_tokens: int, batch_size: int = 8,
                  device: str = "cpu", progress=None) -> list[str]:
    """Greedy replies to each conversation (chat template with the generation prompt), batched by length."""
    import torch

    texts = [render_chat(tok, conv) for conv in conversations]
    enc = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    order = sorted(range(len(texts)), key=lambda i: -len(enc[i]))
    out: list[str] = [""] * len(texts)
    eos = model.generation_config.eos_token_id if model.generation_config.eos_token_id is not None \
        else tok.eos_token_id
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        batch = tok.pad({"input_ids": [enc[i] for i in idx]}, padding=True, return_tensors="pt")
        batch = {k: v.to(device) for k, v in batch.items()}
        with torch.no_grad():
            gen = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                                 pad_token_id=tok.pad_token_id, eos_token_id=eos, temperature=None, top_p=None,
                                 top_k=None)
        new = gen[:, batch["input_ids"].shape[1]:]
        for row, i in enumerate(idx):
            out[i] = tok.decode(new[row], skip_special_tokens=True).strip()
        if progress:
            progress(len(idx))
    return out

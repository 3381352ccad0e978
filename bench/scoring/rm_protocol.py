"""The reward-model protocol: the text an RM scores for a (prompt, response) and its raw score.

As the seed papers score with ``sfairXC/FsfairX-LLaMA3-RM-v0.1``: each (prompt, response) becomes the RM tokenizer's
chat-templated conversation ``prompt + [assistant: response]``; a leading BOS *text* is removed when the tokenizer
adds BOS itself (so the model sees exactly one BOS, as in the FsfairX usage example); the raw score is the
sequence-classification logit (``logits[:, 0]``). Works with any ``AutoModelForSequenceClassification``. Batches
are right-padded (positions match unbatched scoring).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from bench.errors import BenchError


def as_messages(prompt: Any) -> list[dict]:
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    if isinstance(prompt, list) and all(isinstance(m, dict) and "role" in m and "content" in m for m in prompt):
        return [{"role": m["role"], "content": m["content"]} for m in prompt]
    raise BenchError(f"RM prompt must be a string or a list of {{role, content}} messages, got {type(prompt).__name__}")


def _tokenizer_adds_bos(tok) -> bool:
    if tok.bos_token_id is None:
        return False
    ids = tok("a", add_special_tokens=True)["input_ids"]
    return bool(ids) and ids[0] == tok.bos_token_id


def format_rm_text(tok, prompt: Any, response: str) -> str:
    """The chat-templated (prompt, response) text the RM scores (see the module docstring)."""
    conv = as_messages(prompt) + [{"role": "assistant", "content": response}]
    text = tok.apply_chat_template(conv, tokenize=False, add_generation_prompt=False)
    bos = tok.bos_token
    if bos and text.startswith(bos) and _tokenizer_adds_bos(tok):
        text = text[len(bos):]
    return text


def prepare_rm_tokenizer(tok, model=None):
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token if tok.eos_token is not None else tok.unk_token
    tok.padding_side = "right"
    if model is not None and getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tok.pad_token_id
    if not getattr(tok, "chat_template", None):
        raise BenchError("the reward model's tokenizer has no chat template; give rm_model a tokenizer with one")
    return tok


def score_texts(model, tokenizer, prompts: Sequence[Any], responses: Sequence[str], batch_size: int = 8,
                max_length: int | None = 4096, progress: Callable[[int], None] | None = None) -> list[float]:
    """Raw RM scores (``logits[:, 0]``) of each (prompt, response); prompts are message lists or strings."""
    import torch

    if len(prompts) != len(responses):
        raise BenchError(f"score_texts: {len(prompts)} prompts but {len(responses)} responses")
    prepare_rm_tokenizer(tokenizer, model)
    device = next(model.parameters()).device
    texts = [format_rm_text(tokenizer, p, r) for p, r in zip(prompts, responses)]
    enc = [tokenizer(t, add_special_tokens=True, truncation=max_length is not None, max_length=max_length)["input_ids"]
           for t in texts]
    order = sorted(range(len(texts)), key=lambda i: -len(enc[i]))
    scores: list[float] = [0.0] * len(texts)
    model.eval()
    for start in range(0, len(order), max(1, batch_size)):
        idx = order[start:start + batch_size]
        batch = tokenizer.pad({"input_ids": [enc[i] for i in idx]}, padding=True, return_tensors="pt")
        batch = {k: v.to(device) for k, v in batch.items()}
        with torch.no_grad():
            logits = model(**batch).logits
        vals = logits[:, 0].float().cpu().tolist()
        for i, v in zip(idx, vals):
            scores[i] = float(v)
        if progress:
            progress(len(idx))
    return scores

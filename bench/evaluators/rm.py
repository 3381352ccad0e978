"""Reward-model score of a run's generations (and the scorer behind the papers' checkpoint selection).

Protocol (as the seed papers score with ``sfairXC/FsfairX-LLaMA3-RM-v0.1``): each (prompt, response) becomes the
RM tokenizer's chat-templated conversation ``prompt + [assistant: response]``; a leading BOS *text* is removed when
the tokenizer adds BOS itself (so the model sees exactly one BOS, as in the FsfairX usage example); the raw score is
the sequence-classification logit (``logits[:, 0]``); the run's score is the mean over its test prompts. Works with
any ``AutoModelForSequenceClassification``. Batches are right-padded (positions match unbatched scoring).

Settings:
    rm_model        ``fsfairx`` (preset), ``embedded`` (a small Bradley-Terry RM trained once on the embedded
                    preference train split and cached, see ``reward_model_train``), an HF id or a local directory.
                    Default: ``embedded`` for runs on the embedded dataset, else ``fsfairx``.
    rm_batch_size   default 8
    rm_max_length   truncate (prompt + response) to this many tokens, default 4096
    device, dtype   ``auto`` (cuda if visible; bfloat16 on cuda, float32 on cpu)

Scores are cached per (RM identity, generation hash) under ``<cache_dir>/rm_scores/``.
"""
from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench.errors import BenchError
from bench.evaluators import Evaluator, register_evaluator
from bench.rundir import atomic_write_json

RM_PRESETS = {
    "fsfairx": {"hf_id": "sfairXC/FsfairX-LLaMA3-RM-v0.1", "dtype": "bfloat16"},
}
EMBEDDED_RM = "embedded"
SCORE_FORMAT = "rm-score-v1"


# ----------------------------------------------------------------------------------------------------------------
# formatting and scoring
def _as_messages(prompt: Any) -> list[dict]:
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
    conv = _as_messages(prompt) + [{"role": "assistant", "content": response}]
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


# ----------------------------------------------------------------------------------------------------------------
# loading
def resolve_rm(name: str, settings: dict, cache_dir: str | Path) -> tuple[str | Path, str, str]:
    """(source to load, identity for caches, dtype name) for an ``rm_model`` value."""
    from bench.evaluators.run import file_fingerprint

    name = str(name).strip()
    if name in RM_PRESETS:
        p = RM_PRESETS[name]
        return p["hf_id"], p["hf_id"], p["dtype"]
    if name == EMBEDDED_RM:
        from bench.evaluators.reward_model_train import ensure_embedded_reward_model

        path = ensure_embedded_reward_model(cache_dir, settings)
        return path, f"embedded:{path.name}", "float32"
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").exists():
            raise BenchError(f"rm_model directory {path} has no config.json; pass a save_pretrained directory")
        return path, f"{path.resolve()}@{file_fingerprint(path)}", "auto"
    if "/" in name and not name.startswith((".", "/", "~")):
        return name, name, "auto"
    raise BenchError(f"unknown RM preset '{name}'; use rm_model={', '.join(sorted(RM_PRESETS))}, {EMBEDDED_RM}, an "
                     "HF id (org/name) or a local directory")


def load_reward_model(name: str, settings: dict, cache_dir: str | Path):
    """(model, tokenizer, identity) for an ``rm_model`` value, on the configured device, in eval mode."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from bench.evaluators.run import resolve_device, resolve_dtype

    src, ident, dtype_name = resolve_rm(name, settings, cache_dir)
    device = resolve_device(settings)
    explicit = settings.get("dtype") not in (None, "auto")
    if explicit or dtype_name == "auto" or not device.startswith("cuda"):
        dtype = resolve_dtype(settings, device)  # auto: bfloat16 on cuda, float32 on cpu
    else:
        dtype = getattr(torch, dtype_name)
    try:
        tok = AutoTokenizer.from_pretrained(src)
        model = AutoModelForSequenceClassification.from_pretrained(src, dtype=dtype)
    except OSError as e:
        raise BenchError(f"could not load reward model '{name}' from {src} ({type(e).__name__}); download it first or "
                         "pass a local directory as rm_model (offline machines cannot reach the hub)") from None
    prepare_rm_tokenizer(tok, model)
    model.to(device).eval()
    return model, tok, ident


# ----------------------------------------------------------------------------------------------------------------
# caching
def generations_hash(prompts: Sequence[Any], responses: Sequence[str], max_length: int | None) -> str:
    h = hashlib.sha256()
    h.update(json.dumps({"format": SCORE_FORMAT, "max_length": max_length}).encode())
    for p, r in zip(prompts, responses):
        h.update(json.dumps([p, r], sort_keys=True, ensure_ascii=False).encode())
        h.update(b"\n")
    return h.hexdigest()


def _cache_path(cache_dir: str | Path, ident: str, gen_hash: str) -> Path:
    from bench.evaluators.judge import slug

    return Path(cache_dir) / "rm_scores" / slug(ident) / f"{gen_hash[:32]}.json"


class RewardScorer:
    """Loads the RM lazily once and scores lists of (prompt, response), cached per (RM, generation hash)."""

    def __init__(self, rm_model: str, settings: dict | None = None, cache_dir: str | Path | None = None):
        from bench.evaluators.run import int_setting
        from bench.paths import cache_root

        self.settings = dict(settings or {})
        self.rm_model = rm_model
        self.cache_dir = Path(cache_dir) if cache_dir is not None else cache_root()
        self.batch_size = int_setting(self.settings, "rm_batch_size", 8, minimum=1)
        self.max_length = int_setting(self.settings, "rm_max_length", 4096, minimum=8)
        self._loaded = None
        self.ident = None

    def _load(self):
        if self._loaded is None:
            self._loaded = load_reward_model(self.rm_model, self.settings, self.cache_dir)
            self.ident = self._loaded[2]
        return self._loaded

    def identity(self) -> str:
        if self.ident is None:
            _, self.ident, _ = resolve_rm(self.rm_model, self.settings, self.cache_dir)
        return self.ident

    def score(self, prompts: Sequence[Any], responses: Sequence[str], progress=None) -> tuple[list[float], bool]:
        """(scores, cached?)."""
        gen_hash = generations_hash(prompts, responses, self.max_length)
        path = _cache_path(self.cache_dir, self.identity(), gen_hash)
        if path.exists():
            try:
                data = json.loads(path.read_text())
                if data.get("gen_hash") == gen_hash and len(data.get("scores", [])) == len(responses):
                    return [float(x) for x in data["scores"]], True
            except (json.JSONDecodeError, TypeError, ValueError):
                pass  # unreadable cache entry: rescore
        model, tok, _ = self._load()
        scores = score_texts(model, tok, prompts, responses, batch_size=self.batch_size, max_length=self.max_length,
                             progress=progress)
        atomic_write_json(path, {"rm": self.identity(), "gen_hash": gen_hash, "scores": scores})
        return scores, False


def _summary(scores: list[float]) -> dict:
    n = len(scores)
    mean = sum(scores) / n
    var = sum((s - mean) ** 2 for s in scores) / (n - 1) if n > 1 else 0.0
    return {"score": mean, "n": n, "std": math.sqrt(var), "stderr": math.sqrt(var / n) if n > 1 else 0.0,
            "min": min(scores), "max": max(scores)}


# ----------------------------------------------------------------------------------------------------------------
# checkpoint selection (the trainer keeps one checkpoint per validation interval)
def select_best_checkpoint(checkpoint_dirs: Sequence[str | Path], score_fn: Callable[[Path], float]
                           ) -> tuple[Path, dict[str, float]]:
    """Score every checkpoint with ``score_fn`` and return (best dir, {dir: score}). Higher is better; the
    earliest checkpoint wins ties; NaN scores never win."""
    if not checkpoint_dirs:
        raise BenchError("no checkpoints to choose from; the trainer must keep at least one validation checkpoint")
    scores: dict[str, float] = {}
    best: Path | None = None
    best_score = -math.inf
    for d in checkpoint_dirs:
        d = Path(d)
        s = float(score_fn(d))
        scores[str(d)] = s
        if math.isfinite(s) and s > best_score:
            best, best_score = d, s
    if best is None:
        raise BenchError(f"every checkpoint got a non-finite validation score ({scores}); check the reward model")
    return best, scores


def checkpoint_score_fn(prompts: Sequence[Any], *, rm_model: str = EMBEDDED_RM, settings: dict | None = None,
                        cache_dir: str | Path | None = None, max_new_tokens: int = 128) -> Callable[[Path], float]:
    """A ``score_fn`` for :func:`select_best_checkpoint`: greedy replies of the checkpoint to ``prompts`` (message
    lists), mean RM score. The RM is loaded once and shared by all checkpoints."""
    from bench.evaluators.run import generate_chat, int_setting, load_causal_lm

    settings = dict(settings or {})
    scorer = RewardScorer(rm_model, settings, cache_dir)
    batch_size = int_setting(settings, "gen_batch_size", 8, minimum=1)
    msgs = [_as_messages(p) for p in prompts]

    def score_fn(ckpt: Path) -> float:
        model, tok, device = load_causal_lm(ckpt, settings)
        responses = generate_chat(model, tok, msgs, max_new_tokens=max_new_tokens, batch_size=batch_size,
                                  device=device)
        del model
        scores, _ = scorer.score(msgs, responses)
        return sum(scores) / len(scores)

    return score_fn


def validation_scorer(rm_model: str, pipe=None, settings: dict | None = None,
                      cache_dir: str | Path | None = None) -> Callable[[Sequence[Any], Sequence[str]], float]:
    """``score(prompts, responses) -> mean RM score`` for the trainer's checkpoint selection (``select_by: rm`` in
    :mod:`bench.validation`). The RM is loaded once, on first use; scores are cached like the evaluator's. ``pipe``
    (a ``bench.pipeline.Pipeline``) contributes its preset's ``rm_*`` and ``device`` settings."""
    merged = {}
    preset = getattr(pipe, "preset", None) or {}
    merged.update({k: v for k, v in preset.items() if str(k).startswith("rm_") or k in ("device", "dtype")})
    merged.update(settings or {})
    scorer = RewardScorer(rm_model, merged, cache_dir)

    def score(prompts: Sequence[Any], responses: Sequence[str]) -> float:
        if not responses:
            raise BenchError("no validation responses to score")
        scores, _ = scorer.score([_as_messages(p) for p in prompts], list(responses))
        return sum(scores) / len(scores)

    return score


# ----------------------------------------------------------------------------------------------------------------
@register_evaluator
class RMEvaluator(Evaluator):
    """Mean reward-model score of the run's greedy test generations (``generations.jsonl``)."""

    name = "rm"
    version = "1"

    def evaluate(self, run, ctx) -> dict:
        settings = dict(ctx.settings or {})
        manifest = run.manifest
        default = EMBEDDED_RM if str(manifest.get("dataset", "")).lower() == "embedded" else "fsfairx"
        rm_model = str(settings.get("rm_model") or default)
        gens = run.generations()
        if not gens:
            raise BenchError(f"{run.path}/generations.jsonl is empty; rerun `bench run` to generate test responses")
        prompts, responses = [], []
        for i, row in enumerate(gens):
            if "prompt" not in row or not isinstance(row.get("response"), str):
                raise BenchError(f"{run.path}/generations.jsonl row {i + 1} lacks 'prompt' or a string 'response'; "
                                 "regenerate it with `bench run`")
            prompts.append(_as_messages(row["prompt"]))
            responses.append(row["response"])
        scorer = RewardScorer(rm_model, settings, ctx.cache_dir)
        scores, cached = scorer.score(prompts, responses)
        return {**_summary(scores), "rm_model": rm_model, "rm": scorer.identity(), "cached": cached}

"""Reward models: resolving ``rm_model`` (a preset, the cached embedded RM, an HF id or a directory), loading,
scoring lists of responses with a per-(RM, generations) cache, and checkpoint selection by RM score.

Settings:
    rm_model        ``fsfairx`` (preset), ``embedded`` (a small Bradley-Terry RM trained once on the embedded
                    preference train split and cached, see :mod:`bench.scoring.rm_train`), an HF id or a local
                    directory. Default: ``embedded`` for runs on the embedded dataset, else ``fsfairx``.
    rm_batch_size   default 8
    rm_max_length   truncate (prompt + response) to this many tokens, default 4096
    device, dtype   ``auto`` (cuda if visible; bfloat16 on cuda, float32 on cpu)

Scores are cached per (RM identity, generation hash) under ``<cache_dir>/rm_scores/``. The text an RM scores:
:mod:`bench.scoring.rm_protocol`.
"""
from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench.errors import BenchError
from bench.scoring.rm_protocol import as_messages, prepare_rm_tokenizer, score_texts
from bench.store.files import atomic_write_json

RM_PRESETS = {
    "fsfairx": {"hf_id": "sfairXC/FsfairX-LLaMA3-RM-v0.1", "dtype": "bfloat16"},
}
EMBEDDED_RM = "embedded"
SCORE_FORMAT = "rm-score-v1"


# ----------------------------------------------------------------------------------------------------------------
# loading
def resolve_rm(name: str, settings: dict, cache_dir: str | Path) -> tuple[str | Path, str, str]:
    """(source to load, identity for caches, dtype name) for an ``rm_model`` value."""
    from bench.scoring.runtime import file_fingerprint

    name = str(name).strip()
    if name in RM_PRESETS:
        p = RM_PRESETS[name]
        return p["hf_id"], p["hf_id"], p["dtype"]
    if name == EMBEDDED_RM:
        from bench.scoring.rm_train import ensure_embedded_reward_model

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

    from bench.scoring.runtime import resolve_device, resolve_dtype

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
    from bench.textout import slug

    return Path(cache_dir) / "rm_scores" / slug(ident) / f"{gen_hash[:32]}.json"


class RewardScorer:
    """Loads the RM lazily once and scores lists of (prompt, response), cached per (RM, generation hash)."""

    def __init__(self, rm_model: str, settings: dict | None = None, cache_dir: str | Path | None = None):
        from bench.paths import cache_root
        from bench.scoring.runtime import int_setting

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


def summary(scores: list[float]) -> dict:
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
    from bench.scoring.runtime import generate_chat, int_setting, load_causal_lm

    settings = dict(settings or {})
    scorer = RewardScorer(rm_model, settings, cache_dir)
    batch_size = int_setting(settings, "gen_batch_size", 8, minimum=1)
    msgs = [as_messages(p) for p in prompts]

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
    :mod:`bench.pipeline.selection`). The RM is loaded once, on first use; scores are cached like the evaluator's.
    ``pipe`` (a ``bench.pipeline.graph.Pipeline``) contributes its preset's ``rm_*`` and ``device`` settings."""
    merged = {}
    preset = getattr(pipe, "preset", None) or {}
    merged.update({k: v for k, v in preset.items() if str(k).startswith("rm_") or k in ("device", "dtype")})
    merged.update(settings or {})
    scorer = RewardScorer(rm_model, merged, cache_dir)

    def score(prompts: Sequence[Any], responses: Sequence[str]) -> float:
        if not responses:
            raise BenchError("no validation responses to score")
        scores, _ = scorer.score([as_messages(p) for p in prompts], list(responses))
        return sum(scores) / len(scores)

    return score

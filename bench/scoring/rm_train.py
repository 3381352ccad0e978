"""A small Bradley-Terry reward model for the embedded default, trained once and cached.

The RM column must exist on a CPU-only machine, where FsfairX (8B) cannot run. So the harness trains a sequence-
classification head on a few layers of a small causal LM with the Bradley-Terry loss
``-log sigma(r(x, y_w) - r(x, y_l))`` on the embedded suite's preference train split, and scores with it exactly as
with any RM (same chat-templated text, see :mod:`bench.scoring.rm_protocol`). Its held-out pairwise accuracy on the
suite's ``pref_val`` split is stored next to the weights (``bench_rm.json``).

Settings (all optional):
    rm_embedded_base     causal LM to start from: a preset, HF id or directory. Default ``smollm2-135m``.
    rm_embedded_layers   keep this many decoder layers (evenly spread: first and last); default 2; 0 keeps all.
    rm_embedded_epochs   default 2          rm_embedded_lr          default 1e-4
    rm_embedded_batch    default 16         rm_embedded_seed        default 0
    rm_embedded_suite_seed   seed of the embedded suite whose pref_train split trains it; default 0

Cost on the 2-core CPU machine: ~2.5 minutes once (2 layers, 2 epochs of 256 pairs; held-out pairwise accuracy
0.80; 6 layers reach 0.89 but take ~8 minutes).

The cache key covers the base model's identity, every hyperparameter and the training data hash, so changing any
of them trains a new RM under ``<cache_dir>/reward_models/``.
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path

from bench.errors import BenchError
from bench.store.files import atomic_write_json

log = logging.getLogger(__name__)
TRAIN_VERSION = "bt-rm-v1"
DEFAULTS = {"base": "smollm2-135m", "layers": 2, "epochs": 2, "lr": 1e-4, "batch": 16, "seed": 0, "suite_seed": 0,
            "max_length": 256}


def _base_dir(base: str) -> Path:
    from bench.modeling.models import ensure_model_dir

    path = Path(base).expanduser()
    if path.is_dir():
        return path
    src = ensure_model_dir(base)
    if not Path(str(src)).is_dir():
        raise BenchError(f"rm_embedded_base '{base}' is not available locally; pass a preset or a local directory")
    return Path(src)


def _pair_texts(tok, rows: Sequence[dict]) -> list[tuple[str, str]]:
    from bench.scoring.rm_protocol import format_rm_text

    return [(format_rm_text(tok, r["prompt"], r["chosen"]), format_rm_text(tok, r["prompt"], r["rejected"]))
            for r in rows]


def _rewards(model, tok, texts: list[str], max_length: int):
    enc = tok(texts, add_special_tokens=True, truncation=True, max_length=max_length, padding=True,
              return_tensors="pt")
    return model(**enc).logits[:, 0]


def pairwise_accuracy(model, tok, rows: Sequence[dict], max_length: int = 256, batch: int = 32) -> float:
    import torch

    if not rows:
        return float("nan")
    pairs = _pair_texts(tok, rows)
    correct = 0
    model.eval()
    with torch.no_grad():
        for i in range(0, len(pairs), batch):
            chunk = pairs[i:i + batch]
            r = _rewards(model, tok, [c for c, _ in chunk] + [rj for _, rj in chunk], max_length)
            n = len(chunk)
            correct += int((r[:n] > r[n:]).sum())
    return correct / len(pairs)


def train_bt_reward_model(base: str | Path, train_rows: Sequence[dict], out_dir: str | Path, *,
                          val_rows: Sequence[dict] = (), layers: int = 2, epochs: int = 2, lr: float = 1e-4,
                          batch: int = 16, seed: int = 0, max_length: int = 256, device: str = "cpu") -> dict:
    """Train a Bradley-Terry RM on preference rows (``prompt``/``chosen``/``rejected``) and save it to ``out_dir``
    (``save_pretrained`` model + tokenizer + ``bench_rm.json``). Returns the training report."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from bench.modeling.models import prune_layers
    from bench.scoring.rm_protocol import prepare_rm_tokenizer

    if not train_rows:
        raise BenchError("no preference rows to train the reward model on")
    torch.manual_seed(seed)
    src = _base_dir(str(base))
    tok = AutoTokenizer.from_pretrained(src)
    model = AutoModelForSequenceClassification.from_pretrained(src, num_labels=1, dtype=torch.float32)
    prepare_rm_tokenizer(tok, model)
    kept = None
    if layers and hasattr(model, "model") and hasattr(model.model, "layers") and layers < len(model.model.layers):
        kept = prune_layers(model, int(layers))
    # the (large, tied) input embeddings stay frozen: cheaper on CPU and less prone to overfit 256 pairs
    model.get_input_embeddings().weight.requires_grad_(False)
    if hasattr(model, "score"):
        torch.nn.init.normal_(model.score.weight, std=1e-3)
    model.to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    pairs = _pair_texts(tok, train_rows)
    gen = torch.Generator().manual_seed(seed)
    losses: list[float] = []
    t0 = time.time()
    # denormal floats make CPU backward passes several times slower; flush them to zero while training
    flushed = device == "cpu" and torch.set_flush_denormal(True)
    try:
        _train_loop(model, tok, pairs, opt, params, epochs, batch, max_length, device, gen, losses)
    finally:
        if flushed:
            torch.set_flush_denormal(False)
    steps = len(losses)
    model.eval()
    report = {
        "format": TRAIN_VERSION, "base": str(base), "kept_layers": kept, "epochs": epochs, "lr": lr, "batch": batch,
        "seed": seed, "max_length": max_length, "n_train": len(pairs), "steps": steps,
        "final_loss": sum(losses[-5:]) / len(losses[-5:]), "train_seconds": round(time.time() - t0, 1),
        "train_accuracy": pairwise_accuracy(model, tok, list(train_rows)[:128], max_length),
        "val_accuracy": pairwise_accuracy(model, tok, list(val_rows), max_length),
        "n_val": len(val_rows),
    }
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    tok.save_pretrained(out_dir)
    atomic_write_json(out_dir / "bench_rm.json", report)
    return report


def _train_loop(model, tok, pairs, opt, params, epochs, batch, max_length, device, gen, losses) -> None:
    import torch
    import torch.nn.functional as F

    for _ in range(epochs):
        perm = torch.randperm(len(pairs), generator=gen).tolist()
        for i in range(0, len(perm), batch):
            chunk = [pairs[j] for j in perm[i:i + batch]]
            n = len(chunk)
            enc = tok([c for c, _ in chunk] + [r for _, r in chunk], add_special_tokens=True, truncation=True,
                      max_length=max_length, padding=True, return_tensors="pt").to(device)
            r = model(**enc).logits[:, 0].float()
            loss = -F.logsigmoid(r[:n] - r[n:]).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            losses.append(float(loss.detach()))


def embedded_rm_spec(settings: dict) -> dict:
    from bench.scoring.runtime import int_setting

    spec = {
        "base": str(settings.get("rm_embedded_base") or DEFAULTS["base"]),
        "layers": int_setting(settings, "rm_embedded_layers", DEFAULTS["layers"]),
        "epochs": int_setting(settings, "rm_embedded_epochs", DEFAULTS["epochs"], minimum=1),
        "lr": float(settings.get("rm_embedded_lr") or DEFAULTS["lr"]),
        "batch": int_setting(settings, "rm_embedded_batch", DEFAULTS["batch"], minimum=1),
        "seed": int_setting(settings, "rm_embedded_seed", DEFAULTS["seed"]),
        "suite_seed": int_setting(settings, "rm_embedded_suite_seed", DEFAULTS["suite_seed"]),
        "max_length": DEFAULTS["max_length"],
    }
    return spec


def ensure_embedded_reward_model(cache_dir: str | Path, settings: dict | None = None) -> Path:
    """Directory of the embedded BT reward model, training it on first use (cached by a key over base model,
    hyperparameters and data)."""
    from bench.data.suite import build_suite
    from bench.scoring.runtime import file_fingerprint, resolve_device
    from bench.store.stages import ensure_published

    settings = dict(settings or {})
    spec = embedded_rm_spec(settings)
    suite = build_suite(seed=spec["suite_seed"])
    train, val = suite.split("pref_train"), suite.split("pref_val")
    base_dir = _base_dir(spec["base"])
    key_blob = json.dumps({"v": TRAIN_VERSION, **spec, "base_fp": file_fingerprint(base_dir),
                           "data": suite.split_hash("pref_train")}, sort_keys=True)
    key = hashlib.sha256(key_blob.encode()).hexdigest()[:16]
    final = Path(cache_dir) / "reward_models" / f"embedded-{key}"

    def build(tmp: Path) -> dict:
        log.warning("training the embedded Bradley-Terry reward model once (cached in %s)", final)
        report = train_bt_reward_model(
            base_dir, train, tmp, val_rows=val, layers=spec["layers"], epochs=spec["epochs"], lr=spec["lr"],
            batch=spec["batch"], seed=spec["seed"], max_length=spec["max_length"], device=resolve_device(settings))
        return {**report, "spec": spec, "key": key}

    return ensure_published(final, build, marker="bench_rm.json", what="reward model")

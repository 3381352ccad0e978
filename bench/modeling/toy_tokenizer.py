"""A small SentencePiece-style tokenizer trained on the embedded suite's text: a second tokenizer family for the
cross-tokenizer tests, built in about a second with no download.

It has what makes Gemma's tokenizer differ from SmolLM2's byte-level BPE: a "▁" space marker (Metaspace, spaces
prepended to words), digits split one by one, <0xNN> byte-fallback pieces for characters outside the vocabulary,
and its own special tokens (<bos>, <eos>, <pad>, <unk>, <start_of_turn>, <end_of_turn>). Trained deterministically
(one thread, fixed text), so its content (and every cache key that hashes it) is the same on every machine.
"""
from __future__ import annotations

from pathlib import Path

SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"]
BYTE_PIECES = [f"<0x{b:02X}>" for b in range(256)]


def training_text(n_rows: int = 400) -> list[str]:
    """Prompts and responses of the embedded suite (data seed 0), the toy tokenizer's corpus."""
    from bench.data.suite import build_suite

    bundle = build_suite(0)
    out = []
    for split in ("sft", "pref_train"):
        for r in bundle.split(split)[:n_rows]:
            out += [m["content"] for m in r["prompt"]]
            out += [r[f] for f in ("response", "chosen", "rejected") if isinstance(r.get(f), str)]
    return out


def build_toy_tokenizer(out: Path, vocab_size: int = 600) -> None:
    """Train the tokenizer and save it (tokenizer.json + config) as a transformers fast tokenizer in `out`."""
    import os

    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    os.environ.setdefault("RAYON_NUM_THREADS", "1")  # deterministic merges
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first"),
        pre_tokenizers.Digits(individual_digits=True),
    ])
    tok.decoder = decoders.Sequence([decoders.ByteFallback(), decoders.Metaspace(replacement="▁",
                                                                                 prepend_scheme="first")])
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS + BYTE_PIECES,
                                  show_progress=False, initial_alphabet=["▁"])
    tok.train_from_iterator(training_text(), trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
                                   unk_token="<unk>", additional_special_tokens=["<start_of_turn>", "<end_of_turn>"])
    fast.save_pretrained(out)

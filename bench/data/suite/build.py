"""Deterministic generation of the embedded suite as a :class:`DatasetBundle`, and its checker.

Generation (bump ``SUITE_VERSION`` whenever any of this, a template, a word list or a checker changes):

* Each (split, family) pair draws from its own ``random.Random`` seeded with a string derived from the
  seed, the split and the family name, so families and splits do not shift each other's streams.
* Splits are generated in the order test, sft, pref_train, pref_val. A prompt whose user text (case and
  whitespace folded) was already produced anywhere is redrawn, so prompts are unique within and across
  splits and the held-out test prompts never occur in training splits.
* Families are interleaved round-robin in registry order (row i belongs to family i mod F); when a size is
  not a multiple of F the first families get one row more.
* The SFT split's responses are an imperfect demonstrator's: correct on every template but each family's last,
  where it answers in its own house style (the right value in a format the prompt did not ask for: "47 + 38 = 85",
  "Quiet River Stone"; ``Family.house_style``). So SFT alone teaches that habit (checker: ``FORMAT_MISS``), and only
  the preference data says it is unwanted: the rejected response of every preference row on such a prompt is the
  house style (failure "house_style").
* Every other preference row keeps one rejected response whose failure type cycles through a per-split shuffled
  order of
  ``FAILURE_CYCLE`` (six near misses, one verbose, one ignored format) repeated to the split's length and shuffled
  across families, so every split with 8+ rows has all three and three quarters of the pairs are near misses: the wrong answers in the right format that SFT'd small models
  actually produce (each family's ``near_misses``); the row's ``meta.error`` names the kind of a near miss.
"""
from __future__ import annotations

import random

from bench.data.bundle import DatasetBundle
from bench.errors import BenchError

from .families import FAMILIES

SUITE_VERSION = "2.0.0"
SUITE_NAME = "embedded"
DEFAULT_SIZES = {"sft": 256, "pref_train": 256, "pref_val": 64, "test": 256}
FAILURE_CYCLE = ("near_miss",) * 6 + ("verbose", "ignored_format")
GENERATION_ORDER = ("test", "sft", "pref_train", "pref_val")
PREF_SPLITS = ("pref_train", "pref_val")
_MAX_REDRAWS = 500


def _resolve_sizes(sizes) -> dict[str, int]:
    out = dict(DEFAULT_SIZES)
    if sizes is None:
        return out
    if not isinstance(sizes, dict):
        raise BenchError(f"suite sizes must be a mapping of split -> row count, got {type(sizes).__name__}")
    for split, n in sizes.items():
        if split not in DEFAULT_SIZES:
            raise BenchError(f"suite sizes: unknown split {split!r}; use one of {', '.join(DEFAULT_SIZES)}")
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise BenchError(f"suite sizes: {split} must be a non-negative integer, got {n!r}")
        out[split] = n
    return out


def _rng(seed: int, *parts: str) -> random.Random:
    return random.Random("/".join(["prefdistill-suite", str(seed), *parts]))


def _prompt_key(text: str) -> str:
    return " ".join(text.lower().split())


def _family_items(seed: int, split: str, name: str, count: int, seen: set[str]) -> list[tuple]:
    """``count`` fresh (prompt, meta, correct, failures|None) items of one family for one split."""
    fam = FAMILIES[name]
    rng = _rng(seed, split, name)
    items = []
    for k in range(count):
        for _ in range(_MAX_REDRAWS):
            prompt, meta, correct = fam.generate(rng)
            if _prompt_key(prompt) not in seen:
                break
        else:
            raise BenchError(f"suite: family {name!r} ran out of distinct prompts after {k} rows of split "
                             f"{split!r}; use smaller sizes")
        seen.add(_prompt_key(prompt))
        failures = fam.failures(rng, meta, correct) if split in PREF_SPLITS else None
        items.append((prompt, meta, correct, failures))
    return items


def _split_rows(seed: int, split: str, n: int, seen: set[str], names: list[str]) -> list[dict]:
    counts = {name: n // len(names) + (1 if i < n % len(names) else 0) for i, name in enumerate(names)}
    per_family = {name: _family_items(seed, split, name, counts[name], seen) for name in names}
    order = [FAILURE_CYCLE[j % len(FAILURE_CYCLE)] for j in range(n)]  # then shuffled across families
    _rng(seed, split, "failures").shuffle(order)
    rows = []
    for i in range(n):
        name = names[i % len(names)]
        k = i // len(names)
        prompt, meta, correct, failures = per_family[name][k]
        row = {"id": f"{name}-{split}-{k:05d}", "prompt": [{"role": "user", "content": prompt}]}
        fam = FAMILIES[name]
        styled = meta.get("template") == fam.styled_template
        if split == "sft":
            row["response"] = fam.demonstration(meta, correct)
            row["meta"] = dict(meta)
        elif split in PREF_SPLITS:
            failure = "house_style" if styled else order[i]
            row["chosen"] = correct
            row["rejected"] = failures[failure]
            row["meta"] = {**meta, "failure": failure}
            if failure == "near_miss":
                row["meta"]["error"] = fam.error_kind(meta, row["rejected"])
        else:
            row["meta"] = dict(meta)
        rows.append(row)
    return rows


def _resolve_families(families) -> list[str]:
    """The families to build, in registry order (None: all). A family's rows do not depend on which others are
    built beside it, except through the sizes each one gets and prompts another family drew first."""
    if families is None:
        return list(FAMILIES)
    if isinstance(families, str) or not isinstance(families, (list, tuple)) or not families:
        raise BenchError(f"suite families must be a non-empty list of family names, got {families!r}; "
                         f"e.g. [last, max, numword] (known: {', '.join(FAMILIES)})")
    unknown = [f for f in families if f not in FAMILIES]
    if unknown:
        raise BenchError(f"suite families: unknown {', '.join(map(str, unknown))}; known: {', '.join(FAMILIES)}")
    return [name for name in FAMILIES if name in families]


def build_suite(seed: int = 0, sizes: dict[str, int] | None = None, families: list[str] | None = None) -> DatasetBundle:
    """The embedded benchmark as a bundle named "embedded" with splits sft, pref_train, pref_val, test;
    ``families`` keeps only those task families (each split's rows shared out among them)."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise BenchError(f"suite seed must be an integer, got {seed!r}")
    resolved = _resolve_sizes(sizes)
    names = _resolve_families(families)
    seen: set[str] = set()
    splits = {split: _split_rows(seed, split, resolved[split], seen, names) for split in GENERATION_ORDER}
    return DatasetBundle(name=SUITE_NAME, version=SUITE_VERSION,
                         splits={s: splits[s] for s in ("sft", "pref_train", "pref_val", "test")})


def score_response(meta: dict, response: str) -> float:
    """Checker score in [0, 1] of ``response`` for the row whose meta is ``meta`` (dispatch on family)."""
    if not isinstance(meta, dict) or "family" not in meta:
        raise BenchError("suite score: row meta has no 'family' field; score only rows built by the suite")
    fam = FAMILIES.get(meta["family"])
    if fam is None:
        raise BenchError(f"suite score: unknown family {meta['family']!r}; known: {', '.join(FAMILIES)}")
    if not isinstance(response, str):
        return 0.0
    return float(min(1.0, max(0.0, fam.score(meta, response))))


def error_kind(meta: dict, response: str) -> str | None:
    """The near-miss kind (see each family's ``near_misses``) that ``response`` is, or None (correct, or another
    error). Lets a report count the errors the preference data targets."""
    score_response(meta, "")  # the same meta checks
    return FAMILIES[meta["family"]].error_kind(meta, response) if isinstance(response, str) else None

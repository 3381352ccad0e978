"""Turn a dataset name or path into a DatasetBundle.

- ``"embedded"``: the built-in suite, ``bench.data.suite.build_suite(seed, sizes)``.
- an adapter name (``known_datasets()``) or its Hugging Face id: hub data through ``bench.data.adapters``
  (with ``local_path=`` a local copy in the hub schema is used instead of downloading).
- an existing path: a local ``.jsonl``/``.json``/``.parquet`` file or a directory (see
  ``bench.data.adapters.load_local``). Adapter names win over same-named paths; write ``./helpsteer2`` to mean the
  directory.
- any other ``org/name``: a Hugging Face hub dataset in TRL's preference formats (``bench.data.hub``).

A bundle without SFT rows gets them from its chosen responses when a pipeline needs them (``sft_from_chosen``).

Loaded bundles carry ``bundle.stats`` (per split: rows read, kept, ties/singletons dropped, rows skipped,
caps applied); it is informational and not part of the content hash.
"""
from __future__ import annotations

from pathlib import Path

from bench.data.adapters import ADAPTERS, find_adapter, load_adapter, load_local, seeded_pick
from bench.data.bundle import SPLITS, DatasetBundle
from bench.errors import BenchError

EMBEDDED = "embedded"


def known_datasets() -> list[str]:
    """Dataset names accepted by resolve_dataset (besides local paths)."""
    return [EMBEDDED, *sorted(ADAPTERS)]


def _check_sizes(sizes: dict | None) -> dict[str, int]:
    if not sizes:
        return {}
    if not isinstance(sizes, dict):
        raise BenchError(f"dataset sizes must be a mapping of split -> row count, got {type(sizes).__name__}; "
                         f"use e.g. {{pref_train: 1000}} with splits {', '.join(SPLITS)}")
    out = {}
    for split, n in sizes.items():
        if split not in SPLITS:
            raise BenchError(f"unknown split '{split}' in dataset sizes; use one of {', '.join(SPLITS)}")
        if n is None:
            continue
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise BenchError(f"dataset size for '{split}' must be a non-negative integer, got {n!r}; "
                             "fix the value or remove it to keep the whole split")
        out[split] = n
    return out


def cap_splits(bundle: DatasetBundle, sizes: dict | None, seed: int = 0) -> DatasetBundle:
    """Keep at most ``sizes[split]`` rows of each split: the first N of a seeded, id-keyed shuffle, kept in
    their original order. Deterministic; a smaller cap is a subset of a larger one, and splits that share
    ids (pref_val and the test prompts made from it) keep the same ids under the same cap."""
    caps = _check_sizes(sizes)
    if not caps:
        return bundle
    splits = {}
    applied = {}
    for split in SPLITS:
        rows = bundle.split(split)
        if split in caps and caps[split] < len(rows):
            kept, _ = seeded_pick(rows, caps[split], seed, "cap")
            applied[split] = {"before": len(rows), "after": len(kept)}
            rows = kept
        splits[split] = list(rows)
    capped = DatasetBundle(name=bundle.name, version=bundle.version, splits=splits)
    stats = dict(getattr(bundle, "stats", {}) or {})
    if applied:
        stats["caps"] = {"seed": seed, **applied}
    capped.stats = stats  # type: ignore[attr-defined]
    return capped


def merge_bundles(pref_bundle: DatasetBundle, sft_bundle: DatasetBundle) -> DatasetBundle:
    """pref_train / pref_val / test from the first bundle, sft from the second."""
    sft = sft_bundle.split("sft")
    if not sft:
        raise BenchError(f"dataset '{sft_bundle.name}' has no SFT rows to merge; use an SFT dataset "
                         "(e.g. deita-10k or a file of prompt+response rows) as the second dataset")
    splits = {
        "sft": list(sft),
        "pref_train": list(pref_bundle.split("pref_train")),
        "pref_val": list(pref_bundle.split("pref_val")),
        "test": list(pref_bundle.split("test")),
    }
    merged = DatasetBundle(name=f"{pref_bundle.name}+{sft_bundle.name}",
                           version=f"{pref_bundle.version}+{sft_bundle.version}", splits=splits)
    pref_stats = getattr(pref_bundle, "stats", {}) or {}
    sft_stats = getattr(sft_bundle, "stats", {}) or {}
    stats = {k: v for k, v in pref_stats.items() if k in ("pref_train", "pref_val", "test")}
    if "sft" in sft_stats:
        stats["sft"] = sft_stats["sft"]
    merged.stats = stats  # type: ignore[attr-defined]
    return merged


def _looks_like_path(text: str) -> bool:
    return any(c in text for c in "/\\") or text.startswith(("~", ".")) or text.endswith((".jsonl", ".json",
                                                                                           ".parquet"))


def sft_from_chosen(bundle: DatasetBundle) -> DatasetBundle:
    """The bundle with an SFT split made of its pref_train prompts and chosen responses (same ids)."""
    sft = [{"id": r["id"], "prompt": r["prompt"], "response": r["chosen"], "meta": {"from": "chosen"}}
           for r in bundle.split("pref_train")]
    out = DatasetBundle(name=bundle.name, version=bundle.version, splits={**bundle.splits, "sft": sft})
    out.stats = {**(getattr(bundle, "stats", {}) or {}), "sft": {"from_chosen": len(sft)}}  # type: ignore[attr-defined]
    return out


def resolve_dataset(name_or_path: str, seed: int = 0, sizes: dict | None = None,
                    local_path: str | None = None, *, revision: str | None = None,
                    families: list[str] | None = None) -> DatasetBundle:
    """A DatasetBundle for a dataset name, an HF id of a known adapter, or a local path.

    ``sizes`` caps each split (deterministic, seeded); ``local_path`` makes a named hub dataset load from a
    local copy in the hub schema; ``revision`` pins the hub revision (recorded in the bundle version).
    """
    if not isinstance(name_or_path, str) or not name_or_path.strip():
        raise BenchError(f"no dataset given; use one of {', '.join(known_datasets())} or a path to a local "
                         ".jsonl/.json file or directory")
    name = name_or_path.strip()
    if name.lower() == EMBEDDED:
        if local_path is not None:
            raise BenchError("the embedded suite is built in and takes no local path; drop the local path or "
                             "give the file itself as the dataset")
        try:
            from bench.data.suite import build_suite
        except ImportError as e:  # package missing, or bench.data.suite without build_suite yet
            if (e.name or "").startswith("bench.data.suite"):
                raise BenchError("the embedded suite (bench.data.suite) is not available in this installation; "
                                 "use a named dataset or a local file") from None
            raise
        return build_suite(seed=seed, sizes=sizes, families=families)
    if families is not None:
        raise BenchError(f"'families' selects task families of the embedded suite only; drop it for dataset "
                         f"'{name}'")

    adapter = find_adapter(name)
    if adapter is not None:
        bundle, stats = load_adapter(adapter, seed=seed, local_path=local_path, revision=revision)
        bundle.stats = stats  # type: ignore[attr-defined]
        return cap_splits(bundle, sizes, seed)

    path = Path(name).expanduser()
    if path.exists():
        if local_path is not None:
            raise BenchError(f"a local path was given twice ({name} and {local_path}); local_path only applies "
                             f"to a named dataset ({', '.join(sorted(ADAPTERS))})")
        bundle, stats = load_local(path, seed=seed)
        bundle.stats = stats  # type: ignore[attr-defined]
        return cap_splits(bundle, sizes, seed)

    from bench.data.hub import load_hub, looks_like_hub_id

    if looks_like_hub_id(name):
        bundle, stats = load_hub(name, seed=seed, revision=revision)
        bundle.stats = stats  # type: ignore[attr-defined]
        return cap_splits(bundle, sizes, seed)
    known = ", ".join(known_datasets())
    if _looks_like_path(name):
        raise BenchError(f"dataset path not found: {name}; check the path, or use a known dataset name ({known})")
    raise BenchError(f"unknown dataset '{name}'; known datasets: {known}; a path to a local .jsonl/.json/.parquet "
                     "file or directory, or a hub id like org/name, also works")

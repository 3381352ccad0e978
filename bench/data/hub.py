"""Any Hugging Face hub dataset in TRL's preference formats, by id (`--dataset org/name`).

The splits map to the bundle's: `train` (or `train_prefs`) -> pref_train (or SFT rows), `validation` / `valid` /
`val` / `test` (or `test_prefs`) -> pref_val and the test prompts, `train_sft` / `sft` -> sft. Rows are read in any
of the local formats (standard or conversational, explicit or implicit prompt; see bench.data.adapters) and get
content-derived ids, exactly as a local file would.
"""
from __future__ import annotations

import re

from bench.data.adapters import LOCAL_FAMILY, RowError, assemble, content_ids, convert_local
from bench.data.bundle import DatasetBundle
from bench.data.reading import hub_dataset_rows
from bench.data.rows import GENERATED_ID, Source
from bench.errors import BenchError

HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
SPLIT_NAMES = {"train": ("train", "train_prefs"), "val": ("validation", "valid", "val", "test", "test_prefs"),
               "sft": ("train_sft", "sft")}
ALLOWED = {"train": ("pref", "sft"), "val": ("pref",), "sft": ("sft",)}


def looks_like_hub_id(name: str) -> bool:
    return bool(HUB_ID.match(name)) and not name.endswith((".jsonl", ".json", ".parquet"))


def load_hub(hf_id: str, seed: int = 0, revision: str | None = None) -> tuple[DatasetBundle, dict]:
    raw = hub_dataset_rows(hf_id, revision)
    picked = {role: next((n for n in names if raw.get(n)), None) for role, names in SPLIT_NAMES.items()}
    if picked["train"] is None and picked["sft"] is None:
        raise BenchError(f"dataset '{hf_id}' has no train split (it has: {', '.join(sorted(raw)) or 'none'}); "
                         "use a dataset with a 'train' or 'train_prefs' split")
    out, stats = {}, {}
    for role, split in picked.items():
        if split is None:
            continue
        source = Source(f"dataset '{hf_id}' (split '{split}')")
        try:
            kind, result = convert_local(raw[split], GENERATED_ID, ALLOWED[role])
        except RowError as e:
            raise source.error(e) from None
        out[role] = (kind, content_ids(result.rows))
        stats[{"train": "pref_train" if kind == "pref" else "sft", "val": "pref_val", "sft": "sft"}[role]] = \
            result.stats
    train_kind, train = out.get("train", ("pref", []))
    sft = out["sft"][1] if "sft" in out else (train if train_kind == "sft" else [])
    pref_train = train if train_kind == "pref" else []
    val = out["val"][1] if "val" in out else (None if pref_train else [])
    version = f"hub:{hf_id}" + (f"@{revision}" if revision else "")
    return assemble(hf_id, version, "pref", pref_train, val, None, sft, seed, stats, LOCAL_FAMILY), stats

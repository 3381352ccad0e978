"""Seeded row picks, the validation part carved off train, and the assembly of a DatasetBundle's splits."""
from __future__ import annotations

import hashlib

from bench.data.bundle import DatasetBundle
from bench.data.rows import VAL_FRACTION, test_row_from

# ----------------------------------------------------------------------------------------------------------
# splits and assembly
# ----------------------------------------------------------------------------------------------------------


def _order_key(seed: int, salt: str, row_id: str) -> str:
    return hashlib.sha256(f"{seed}:{salt}:{row_id}".encode()).hexdigest()


def seeded_pick(rows: list[dict], n: int, seed: int, salt: str) -> tuple[list[dict], list[dict]]:
    """Deterministically pick n rows (by a seeded hash of their ids); both parts keep the original order."""
    if n >= len(rows):
        return list(rows), []
    ranked = sorted(range(len(rows)), key=lambda i: _order_key(seed, salt, rows[i]["id"]))
    chosen = set(ranked[:n])
    return ([r for i, r in enumerate(rows) if i in chosen], [r for i, r in enumerate(rows) if i not in chosen])


def carve_val(train: list[dict], seed: int, fraction: float = VAL_FRACTION) -> tuple[list[dict], list[dict]]:
    """Split a validation part off train: ``fraction`` of the rows, at least 1 when train has 2+ rows."""
    if len(train) < 2:
        return list(train), []
    n_val = min(len(train) - 1, max(1, round(fraction * len(train))))
    val, rest = seeded_pick(train, n_val, seed, "val")
    return rest, val


def assemble(name: str, version: str, kind: str, train: list[dict], val: list[dict] | None,
             test: list[dict] | None, sft: list[dict] | None, seed: int,
             stats: dict, family: str | None = None) -> DatasetBundle:
    """Fill the bundle splits: carve pref_val off train when missing; test prompts from pref_val if none
    (their meta.family is `family`, default the dataset name)."""
    splits: dict[str, list[dict]] = {"sft": list(sft or []), "pref_train": [], "pref_val": [], "test": []}
    if kind == "pref":
        if val is None:
            train, val = carve_val(train, seed)
            stats["pref_val"] = {"carved_from_train": len(val), "seed": seed}
        splits["pref_train"], splits["pref_val"] = train, val
        if test is None:
            test = [test_row_from(r, family or name) for r in val]
            stats.setdefault("test", {})["from_pref_val"] = len(test)
    else:
        splits["sft"] = train + splits["sft"]
    splits["test"] = list(test or [])
    return DatasetBundle(name=name, version=version, splits=splits)

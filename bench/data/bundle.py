"""The canonical in-memory dataset: named splits of JSON-able rows plus a content hash."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

SPLITS = ("sft", "pref_train", "pref_val", "test")


def rows_hash(rows: list[dict]) -> str:
    """sha256 of the canonical JSON of a list of rows (key order independent)."""
    h = hashlib.sha256()
    for row in rows:
        h.update(json.dumps(row, sort_keys=True, ensure_ascii=False).encode())
        h.update(b"\n")
    return h.hexdigest()


@dataclass
class DatasetBundle:
    name: str
    version: str
    splits: dict[str, list[dict]] = field(default_factory=dict)

    def split(self, name: str) -> list[dict]:
        return self.splits.get(name, [])

    def split_hash(self, name: str) -> str:
        return rows_hash(self.split(name))

    @property
    def hash(self) -> str:
        h = hashlib.sha256()
        for name in SPLITS:
            h.update(f"{name}:{self.split_hash(name)}\n".encode())
        return h.hexdigest()

    def hashes(self) -> dict[str, str]:
        return {name: self.split_hash(name) for name in SPLITS if self.split(name)}

"""A run directory: manifest.json, metrics.json, generations.jsonl, checkpoint/. The leaderboard reads only these."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from bench.errors import BenchError


def atomic_write_text(path: Path, text: str) -> None:
    """Write a file so that readers see either the old or the new content, never half of it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def write_jsonl(path: Path, rows: list[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


class RunDir:
    """Accessors for one run directory."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    @classmethod
    def open(cls, path: str | Path) -> "RunDir":
        run = cls(path)
        if not run.manifest_path.exists():
            raise BenchError(f"{path} is not a run directory (no manifest.json); pass a directory made by `bench run`")
        return run

    manifest_path = property(lambda self: self.path / "manifest.json")
    metrics_path = property(lambda self: self.path / "metrics.json")
    generations_path = property(lambda self: self.path / "generations.jsonl")
    checkpoint_path = property(lambda self: self.path / "checkpoint")

    @property
    def manifest(self) -> dict:
        return json.loads(self.manifest_path.read_text())

    @property
    def metrics(self) -> dict:
        return json.loads(self.metrics_path.read_text()) if self.metrics_path.exists() else {}

    def generations(self) -> list[dict]:
        if not self.generations_path.exists():
            raise BenchError(f"{self.path} has no generations.jsonl; rerun `bench run` for this run")
        return read_jsonl(self.generations_path)

    def update_metrics(self, name: str, result: dict) -> None:
        metrics = self.metrics
        metrics[name] = result
        atomic_write_json(self.metrics_path, metrics)

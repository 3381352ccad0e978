"""Evaluator plugin base: each evaluator scores one run directory and returns a JSON-able dict."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar


@dataclass
class EvalContext:
    """What an evaluator may use. `settings` holds user options (CLI `--set`, judge url/model, limits)."""

    settings: dict[str, Any] = field(default_factory=dict)
    cache_dir: str | None = None  # shared cache root (judgments, RM scores, reward models)


class Evaluator:
    """Subclass, set `name` and `version`, and implement `evaluate`.

    `evaluate(run, ctx)` gets a `bench.store.rundir.RunDir` and returns a dict with at least one numeric headline
    under the key `score`. The harness stores it in the run's metrics.json as
    `{name: {"version": version, "settings": ..., **result}}`.
    """

    name: ClassVar[str] = ""
    version: ClassVar[str] = "1"

    def evaluate(self, run, ctx: EvalContext) -> dict[str, Any]:  # pragma: no cover - interface
        raise NotImplementedError

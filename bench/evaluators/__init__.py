"""Evaluators of a finished run (verified, reward accuracy, RM, MT-Bench, AlpacaEval, OLL, KL) and their registry.
May import: core, store, data, modeling, scoring, pipeline."""
from __future__ import annotations

import importlib

from bench.errors import BenchError
from bench.evaluators.base import EvalContext, Evaluator

_REGISTRY: dict[str, type[Evaluator]] = {}
# module that defines each built-in evaluator (imported lazily: some pull heavy packages)
_BUILTIN = {
    "verified": "bench.evaluators.verified",
    "reward_accuracy": "bench.evaluators.reward_accuracy",
    "rm": "bench.evaluators.rm",
    "mtbench": "bench.evaluators.mtbench",
    "alpacaeval": "bench.evaluators.alpacaeval",
    "oll": "bench.evaluators.oll",
    "value_kl": "bench.evaluators.value_kl",
    "teacher_kl": "bench.evaluators.teacher_kl",
}


def register_evaluator(cls: type[Evaluator]) -> type[Evaluator]:
    _REGISTRY[cls.name] = cls
    return cls


def get_evaluator(name: str) -> Evaluator:
    if name not in _REGISTRY and name in _BUILTIN:
        importlib.import_module(_BUILTIN[name])
    if name not in _REGISTRY:
        raise BenchError(f"unknown evaluator '{name}'; choose from: {', '.join(sorted(_BUILTIN))}")
    return _REGISTRY[name]()


def evaluator_names() -> list[str]:
    return sorted(set(_BUILTIN) | set(_REGISTRY))


__all__ = ["EvalContext", "Evaluator", "register_evaluator", "get_evaluator", "evaluator_names"]

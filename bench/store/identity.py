"""Versions of the code a cached result depends on, for stage and run keys.

A key must change when the code that produced the result changes, and only then: `code_version` hashes the
*syntax tree* of the modules (docstrings and comments dropped), so editing documentation keeps every cache while a
changed loss, trainer or signal computation gives new keys. Third-party method plugins are covered the same way
(their module is hashed like the built-in ones).
"""
from __future__ import annotations

import ast
import hashlib
import importlib
import inspect
from functools import lru_cache

# Shared code every trained model depends on (the loss helpers, the packed forward, the training loop).
TRAINING_MODULES = ("bench.tensors", "bench.head", "bench.modeling.forward", "bench.modeling.precision",
                    "bench.train.trainer", "bench.train.checkpoint")
SIGNAL_MODULES = ("bench.signals.compute", "bench.modeling.forward", "bench.head", "bench.tensors",
                  "bench.signals.cache", "bench.signals.codec")
GENERATION_MODULES = ("bench.modeling.generate",)


def _strip_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant) \
                    and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
    return tree


@lru_cache(maxsize=None)
def module_version(name: str) -> str:
    """Hash of a module's code (its syntax tree without docstrings; comments never reach the tree)."""
    module = importlib.import_module(name)
    try:
        source = inspect.getsource(module)
    except (OSError, TypeError):  # no source available (a compiled module): fall back to its name
        return hashlib.sha256(name.encode()).hexdigest()[:16]
    tree = _strip_docstrings(ast.parse(source))
    return hashlib.sha256(ast.dump(tree, include_attributes=False).encode()).hexdigest()[:16]


def code_version(*modules: str) -> str:
    h = hashlib.sha256()
    for name in sorted(set(modules)):
        h.update(f"{name}:{module_version(name)}\n".encode())
    return h.hexdigest()[:16]


def method_code_version(method) -> str:
    """The loss code of a plugin plus the shared training code it runs on."""
    return code_version(type(method).__module__, *TRAINING_MODULES)


def diff_parts(old, new, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two identity trees (nested dicts)."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in sorted(set(old) | set(new), key=str):
            out += diff_parts(old.get(k), new.get(k), f"{prefix}{k}.")
        return out
    return [prefix.rstrip(".") or "(everything)"] if old != new else []

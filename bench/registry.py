"""Method registry: plugins are discovered through the `bench.methods` entry-point group, so a third-party
package adds a method by declaring `[project.entry-points."bench.methods"] mymethod = "mypkg.mod:MyMethod"`."""
from __future__ import annotations

from functools import lru_cache
from importlib.metadata import entry_points

from bench.errors import BenchError
from bench.method import Method

GROUP = "bench.methods"


@lru_cache(maxsize=1)
def _entry_points() -> dict:
    eps = {ep.name: ep for ep in entry_points(group=GROUP)}
    if not eps:
        raise BenchError("no method plugins found; install the project first: `pip install -e .` (or `make setup`)")
    return eps


def method_names() -> list[str]:
    return sorted(_entry_points())


def get_method(name: str) -> Method:
    eps = _entry_points()
    if name not in eps:
        raise BenchError(f"unknown method '{name}'; choose from: {', '.join(sorted(eps))} (see `bench methods`)")
    try:
        cls = eps[name].load()
    except Exception as e:  # a broken third-party plugin must not take the others down
        raise BenchError(f"method plugin '{name}' ({eps[name].value}) failed to import: {e}") from None
    if not (isinstance(cls, type) and issubclass(cls, Method)):
        raise BenchError(f"entry point '{name}' ({eps[name].value}) is not a bench.method.Method subclass")
    method = cls()
    if method.name != name:
        raise BenchError(f"entry point '{name}' loads a method named '{method.name}'; make the names agree")
    return method


def clear_cache() -> None:
    _entry_points.cache_clear()

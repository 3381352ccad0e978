"""The tree, docs/ARCHITECTURE.md's package table and the imports agree: no import cycles, no import against the
table, no package missing from it, each package's `__init__` docstring naming the imports its row allows.

Imports are read from the syntax tree, wherever they stand (module level, inside functions, under TYPE_CHECKING):
a deferred import still ties two modules together."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "ARCHITECTURE.md"
CORE_MAX = 12  # modules at the top of bench/, __init__ excluded


def module_files() -> dict[str, Path]:
    """Dotted name -> file, for bench/, methods/, leaderboard/ and cli.py."""
    out = {"cli": ROOT / "cli.py"}
    for top in ("bench", "methods", "leaderboard"):
        for path in sorted((ROOT / top).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The project modules `name` imports (a `from X import y` counts as X.y when that is a module)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            out |= {f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names}
    return {m for m in out if m.split(".")[0] in ("bench", "methods", "leaderboard", "cli")} - {name}


def package_of(name: str) -> str:
    parts = name.split(".")
    if parts[0] != "bench":
        return parts[0]
    return f"bench.{parts[1]}" if len(parts) > 1 and (ROOT / "bench" / parts[1]).is_dir() else "core"


def doc_table() -> dict[str, set[str]]:
    """package -> the packages it may import, from the table in docs/ARCHITECTURE.md."""
    text = DOC.read_text(encoding="utf-8")
    section = text.split("## Packages and the direction of imports", 1)[1].split("\n## ", 1)[0]
    rows = [r for r in section.splitlines() if r.startswith("| ") and not r.startswith("| package")]
    table = {}
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        allowed = cells[2]
        table[cells[0]] = {"*"} if allowed.startswith("every") else (
            set() if allowed == "nothing" else {a.strip() for a in allowed.split(",")})
    return table


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    files = module_files()
    known = set(files)
    return {name: imports_of(name, path, known) & known for name, path in files.items()}


def test_no_import_cycles(graph):
    assert find_cycles(graph) == []


def test_cycle_finder_sees_a_deferred_cycle(tmp_path):
    """The walk counts imports inside functions and under TYPE_CHECKING, the way the four old cycles hid."""
    (tmp_path / "a.py").write_text("def f():\n    from bench.b import g\n")
    (tmp_path / "b.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from bench.a import f\n")
    known = {"bench.a", "bench.b"}
    g = {n: imports_of(n, tmp_path / f"{n[-1]}.py", known) for n in known}
    assert find_cycles(g) == [["bench.a", "bench.b"]]


def violations(graph: dict[str, set[str]], table: dict[str, set[str]]) -> list[str]:
    wrong = []
    for name, targets in sorted(graph.items()):
        src = package_of(name)
        allowed = table[src]
        for target in sorted(targets):
            dst = package_of(target)
            if dst != src and "*" not in allowed and dst not in allowed:
                wrong.append(f"{name} -> {target} ({src} may import only {sorted(allowed) or 'nothing'})")
    return wrong


def test_every_import_follows_the_table(graph):
    assert violations(graph, doc_table()) == []


def test_table_rejects_an_upward_import(graph):
    """The check has teeth: the store importing the trainer, or the core importing the store, is caught."""
    bad = {**graph, "bench.store.stages": graph["bench.store.stages"] | {"bench.train.trainer"},
           "bench.errors": graph["bench.errors"] | {"bench.store.locks"}}
    assert len(violations(bad, doc_table())) == 2


def test_table_lists_exactly_the_packages_and_has_no_loop():
    table = doc_table()
    tree = {"core", "methods", "leaderboard", "cli"} | {
        f"bench.{p.name}" for p in (ROOT / "bench").iterdir() if (p / "__init__.py").is_file()}
    assert set(table) == tree
    deps = {p: {a for a in allowed if a != "*"} for p, allowed in table.items()}
    assert find_cycles(deps) == []


def test_package_docstrings_name_their_allowed_imports():
    table = doc_table()
    for pkg in (p for p in table if p.startswith("bench.")):
        init = ROOT / pkg.replace(".", "/") / "__init__.py"
        doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8"))) or ""
        assert len([line for line in doc.splitlines() if line.strip()]) <= 2, f"{init}: say it in two lines"
        said = re.search(r"May import: ([a-z, ]*)\.", " ".join(doc.split()))
        assert said, f"{init} does not end with 'May import: ...'"
        names = {n.strip() for n in said.group(1).split(",")}
        full = {n if n == "core" else f"bench.{n}" for n in names}
        assert full == table[pkg], f"{init} says {sorted(full)}, the table {sorted(table[pkg])}"


def test_at_most_a_dozen_modules_at_the_top():
    top = [p.name for p in (ROOT / "bench").glob("*.py") if p.name != "__init__.py"]
    assert len(top) <= CORE_MAX, sorted(top)


def test_plugin_api_imports_from_where_it_always_was():
    from bench.method import LossBatch, Method, MethodConfig, SignalSpec, setting  # noqa: F401
    from bench.tensors import Packed  # noqa: F401

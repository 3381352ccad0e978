"""`bench cache verify | ls | du | gc`: every entry (and run) checked against its checksums, which cache entries
there are, their disk use and which finished runs use them, and deleting what no run uses. cli.py registers these
commands on its `cache` sub-app."""
from __future__ import annotations

import time
from pathlib import Path
from typing import List, Optional

import typer

from bench.errors import BenchError


def _runs_dirs(runs: List[Path]) -> list[Path]:
    return list(runs) or [Path("runs")]


def cache_ls(runs: List[Path] = typer.Option([], help="also look for runs in this folder (default: runs); runs "
                                             "register themselves in the cache, wherever they are")):
    """Every cache entry: what it is, its size, when it was last used and which finished runs use it."""
    from bench.store.usage import entries, human_age, human_size
    from bench.textout import table, terminal_width

    root = cache_root_checked()
    found = entries(_runs_dirs(runs))
    now = time.time()
    rows = [[e.kind, e.rel(root), human_size(e.size), human_age(now - e.last_used),
             ", ".join(e.runs) if e.runs else "none"] for e in sorted(found, key=lambda e: e.rel(root))]
    if rows:
        typer.echo(table(["kind", "entry", "size", "last used", "used by runs"], rows, right=("size",),
                         width=terminal_width()))
    typer.echo(f"{len(found)} entries in {root}")


def cache_du(runs: List[Path] = typer.Option([], help="also look for runs in this folder (default: runs)")):
    """Disk use of the cache by kind of entry, and how much no finished run uses (what `bench cache gc` frees)."""
    from bench.store.usage import dir_size, entries, human_size, leftovers
    from bench.textout import table, terminal_width

    root = cache_root_checked()
    by_kind: dict[str, list] = {}
    for e in entries(_runs_dirs(runs)):
        k = by_kind.setdefault(e.kind, [0, 0, 0])
        k[0] += 1
        k[1] += e.size
        k[2] += 0 if e.runs else e.size
    left = leftovers(root)
    if left:
        by_kind["leftovers of interrupted builds"] = [len(left), sum(dir_size(d) for d, _ in left), 0]
        by_kind["leftovers of interrupted builds"][2] = by_kind["leftovers of interrupted builds"][1]
    rows = [[k, v[0], human_size(v[1]), human_size(v[2])] for k, v in sorted(by_kind.items())]
    total = [sum(v[i] for v in by_kind.values()) for i in range(3)]
    rows.append(["total", total[0], human_size(total[1]), human_size(total[2])])
    typer.echo(table(["kind", "entries", "size", "not used by any run"], rows, right=("entries", "size",
                     "not used by any run"), width=terminal_width()))
    typer.echo(f"cache: {root} (set BENCH_CACHE to move it); on disk: {human_size(dir_size(root, set()))}")


def cache_gc(
    older_than: Optional[str] = typer.Option(None, "--older-than", help="only entries unused for this long "
                                             "(45s, 90m, 12h, 30d, 2w)"),
    include_used: bool = typer.Option(False, "--include-used", help="also delete entries finished runs use "
                                      "(their runs stay valid: each run keeps its own checkpoint)"),
    dry_run: bool = typer.Option(False, "--dry-run", help="list what would be deleted; delete nothing"),
    runs: List[Path] = typer.Option([], help="also look for runs in this folder (default: runs)"),
):
    """Delete cache entries no finished run uses (and leftovers of interrupted builds); they are rebuilt when
    needed."""
    from bench.store.usage import gc, human_size, parse_age

    age = parse_age(older_than) if older_than is not None else None
    root = cache_root_checked()
    res = gc(_runs_dirs(runs), age, include_used, dry_run)
    for path, size in res.deleted:
        typer.echo(f"{'would delete' if dry_run else 'deleted'} {path} ({human_size(size)})")
    for path in res.busy:
        typer.echo(f"skipped {path}: in use by another bench process")
    freed = human_size(sum(size for _, size in res.deleted))
    typer.echo(f"{'would free' if dry_run else 'freed'} {freed} in {root}; kept {res.kept_used} entries used by "
               f"finished runs" + ("" if include_used else " (--include-used deletes them too)")
               + (f" and {res.kept_recent} used within {older_than}" if older_than else ""))


def cache_root_checked() -> Path:
    from bench.paths import cache_root

    return cache_root()


def cache_verify(
    fix: bool = typer.Option(False, help="delete corrupt cache entries (they are rebuilt on next use)"),
    runs: Optional[Path] = typer.Option(None, help="also check every run directory under this folder"),
):
    """Check every cached stage, signal entry and model (and, with --runs, every run) against its checksums."""
    from bench.paths import cache_root
    from bench.store.admin import verify_cache

    n, bad, legacy, outcome = verify_cache(fix=fix)
    for path, problem in bad:
        typer.echo(f"CORRUPT {path}: {problem}" + (f"  -> {outcome[path]}" if fix else ""))
    for path in legacy:
        typer.echo(f"OLD {path}: made by an older version (no checksums), not used by this one" +
                   (f"  -> {outcome[path]}" if fix else "; --fix deletes it"))
    n_runs, bad_runs = 0, 0
    if runs is not None:
        from bench.store.rundir import RunDir, find_runs

        for p in find_runs(runs):
            n_runs += 1
            try:
                RunDir.open(p, verify="all")
            except BenchError as e:
                bad_runs += 1
                typer.echo(f"CORRUPT {p}: {e}")
    typer.echo(f"checked {n} cache entries in {cache_root()}" + (f" and {n_runs} runs" if runs else "") +
               f": {len(bad) + bad_runs} corrupt" + ("" if fix or not bad else "; `bench cache verify --fix` "
                                                     "deletes the corrupt cache entries"))
    if bad_runs or any(not fix or outcome[p] != "deleted" for p, _ in bad):
        raise typer.Exit(1)

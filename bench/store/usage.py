"""`bench cache ls | du | gc`: what the cache holds, how big it is, which runs use it, and cleaning it up.

Which runs use an entry: every finished run lists the cache entries it built or reused in its manifest
(`cache_entries`, paths relative to the cache root), and registers its own location in the cache
(`.runs/<hash>.json`), so runs in any `--runs` folder are found; `--runs DIR` adds a folder of runs made before
this record existed or moved since. "Last used" is the mtime of the entry's use stamp (`.locks/NAME.used`, touched
on every use; the entry itself is never modified once published).

`gc` deletes, under each entry's lock (skipping any entry another process holds) and only through
`bench.store.stages.remove_owned` (a directory inside the cache that carries a harness marker), the entries no finished
run uses (with `--older-than`, only those unused for that long), plus the temp folders of builders that died.
An entry a finished run uses goes only with `--include-used`.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.errors import BenchError
from bench.paths import cache_root
from bench.store.admin import MARKERS, published_dirs
from bench.store.files import atomic_write_json
from bench.store.rundir import MARKER as RUN_MARKER

REGISTRY = ".runs"
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def register_run(run_path: Path) -> None:
    """Remember where a finished run lives (one small file per run folder)."""
    path = str(Path(run_path).resolve())
    try:
        atomic_write_json(cache_root() / REGISTRY / f"{hashlib.sha256(path.encode()).hexdigest()[:16]}.json",
                          {"path": path})
    except OSError:  # a read-only cache: the run still lists its entries in its own manifest
        pass


def parse_age(text: str) -> float:
    """'30d', '12h', '90m', '2w', '45s' -> seconds."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", text or "")
    if not m:
        raise BenchError(f"--older-than {text!r} is not an age; use a number and a unit: 45s, 90m, 12h, 30d, 2w")
    return float(m.group(1)) * _UNITS[m.group(2)]


def human_size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"


def human_age(seconds: float) -> str:
    for unit, size in (("w", _UNITS["w"]), ("d", _UNITS["d"]), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit} ago"
    return "just now"


def _files(d: Path):
    for root, _, files in os.walk(d):
        for f in files:
            try:
                yield os.lstat(os.path.join(root, f))
            except OSError:
                continue


def dir_size(d: Path, seen: set | None = None) -> int:
    """Bytes of the files below `d`; with `seen`, a file hard-linked from elsewhere is counted once."""
    total = 0
    for st in _files(d):
        if seen is not None:
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
        total += st.st_size
    return total


@dataclass
class Entry:
    path: Path
    marker: str
    kind: str
    size: int
    last_used: float
    runs: list[str] = field(default_factory=list)

    def rel(self, root: Path) -> str:
        return str(self.path.relative_to(root))


def last_used(d: Path, marker: str) -> float:
    """When the entry was last used (its use stamp), else when it was published (its marker)."""
    from bench.store.stages import use_stamp

    for p in (use_stamp(d), d / marker):
        try:
            return p.stat().st_mtime
        except OSError:
            continue
    return 0.0


def known_runs(runs_dirs: list[Path]) -> list[Path]:
    """Finished run folders: the registered ones that still exist, and those inside `runs_dirs`."""
    root = cache_root()
    found: dict[str, Path] = {}
    for f in sorted((root / REGISTRY).glob("*.json")):
        try:
            p = Path(json.loads(f.read_text())["path"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if (p / RUN_MARKER).is_file():
            found[str(p.resolve())] = p
    for d in runs_dirs:
        if Path(d).is_dir():
            for p in Path(d).iterdir():
                if (p / RUN_MARKER).is_file():
                    found.setdefault(str(p.resolve()), p)
    return [found[k] for k in sorted(found)]


def usage(runs_dirs: list[Path]) -> dict[str, list[str]]:
    """{entry path relative to the cache root: [run names]} over every finished run found."""
    out: dict[str, list[str]] = {}
    for p in known_runs(runs_dirs):
        try:
            marker = json.loads((p / RUN_MARKER).read_text())
            if marker.get("state") != "finished":
                continue
            entries = json.loads((p / "manifest.json").read_text()).get("cache_entries") or []
        except (OSError, ValueError):
            continue
        for rel in entries:
            out.setdefault(rel, []).append(p.name)
    return out


def entries(runs_dirs: list[Path]) -> list[Entry]:
    root = cache_root()
    used = usage(runs_dirs)
    seen: set = set()
    out = []
    for d, marker in published_dirs(root):
        kind = MARKERS[marker]
        rel = d.relative_to(root)
        if kind == "stage" and len(rel.parts) >= 3 and rel.parts[0] == "stages":
            kind = f"{rel.parts[1]} stage"
        elif kind == "signal cache entry":
            kind = "teacher signals"
        last = last_used(d, marker)
        out.append(Entry(d, marker, kind, dir_size(d, seen), last, sorted(used.get(str(rel), []))))
    return out


def leftovers(root: Path | None = None) -> list[tuple[Path, Path]]:
    """(folder, lock file) of temp folders left by builders that died (`.NAME.tmp-*`) and the resumable work
    folders of stage builds that never finished (`HASH.work`)."""
    from bench.store.stages import lock_file

    root = Path(root or cache_root())
    out = []
    for pattern in ("*/.*.tmp-*", "*/*/.*.tmp-*", "*/*/*.work"):
        for d in root.glob(pattern):
            if d.is_dir() and not d.is_symlink():
                final = d.parent / (d.name[1:].split(".tmp-")[0] if d.name.startswith(".") else d.name[:-5])
                out.append((d, lock_file(final)))
    return sorted(out)


@dataclass
class GcResult:
    deleted: list[tuple[str, int]] = field(default_factory=list)  # (path, bytes)
    kept_used: int = 0
    kept_recent: int = 0
    busy: list[str] = field(default_factory=list)


def gc(runs_dirs: list[Path], older_than: float | None = None, include_used: bool = False,
       dry_run: bool = False) -> GcResult:
    from bench.store.locks import Busy, locked
    from bench.store.stages import lock_file, remove_owned

    root = cache_root()
    now = time.time()
    res = GcResult()
    for e in entries(runs_dirs):
        if e.runs and not include_used:
            res.kept_used += 1
            continue
        if older_than is not None and now - e.last_used < older_than:
            res.kept_recent += 1
            continue
        if dry_run:
            res.deleted.append((e.rel(root), e.size))
            continue
        try:
            with locked(lock_file(e.path), f"{e.kind} {e.path.name}", wait=False):
                if older_than is not None and now - last_used(e.path, e.marker) < older_than:
                    res.kept_recent += 1  # used since we looked
                    continue
                remove_owned(e.path, root, e.marker)
            res.deleted.append((e.rel(root), e.size))
        except Busy:
            res.busy.append(e.rel(root))
        except (BenchError, OSError):
            continue
    for d, lock in leftovers(root):
        if d.name.endswith(".work") and older_than is not None and now - d.stat().st_mtime < older_than:
            continue
        size = dir_size(d)
        if dry_run:
            res.deleted.append((str(d.relative_to(root)), size))
            continue
        try:
            with locked(lock, f"leftover {d.name}", wait=False):
                if d.exists():
                    remove_owned(d, root, None)
            res.deleted.append((str(d.relative_to(root)), size))
        except Busy:
            res.busy.append(str(d.relative_to(root)))
        except (BenchError, OSError):
            continue
    return res

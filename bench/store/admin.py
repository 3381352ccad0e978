"""`bench cache verify`: check every published directory of the cache (stages, signal entries, converted models,
reward models) and, optionally, every run directory, against the checksums recorded when they were written."""
from __future__ import annotations

from pathlib import Path

from bench.paths import cache_root
from bench.store.stages import lock_file, problems, remove_owned

# marker file -> what the directory holding it is
MARKERS = {"stage.json": "stage", "manifest.json": "signal cache entry", "bench_model.json": "converted model",
           "bench_tokenizer.json": "tokenizer and config", "bench_rm.json": "reward model", ".complete": "lm-eval task folder"}


def published_dirs(root: Path | None = None) -> list[tuple[Path, str]]:
    """(directory, marker) of every published directory up to three levels below the cache root."""
    root = Path(root or cache_root())
    out = []
    for depth in ("*", "*/*", "*/*/*"):
        for d in root.glob(depth):
            if not d.is_dir() or any(part.startswith(".") for part in d.relative_to(root).parts):
                continue
            for marker in MARKERS:
                if (d / marker).is_file():
                    out.append((d, marker))
                    break
    return sorted(out)


def is_legacy(d: Path, marker: str) -> bool:
    """Written by an older version (a marker without checksums): never read by this version, which keys and
    names its entries differently."""
    import json

    try:
        meta = json.loads((d / marker).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and "files" not in meta


def verify_cache(fix: bool = False, root: Path | None = None) -> tuple[int, list[tuple[Path, str]], list[Path],
                                                                     dict[Path, str]]:
    """(number checked, [(corrupt directory, first problem)], [legacy directories], {directory: fix outcome}).
    With `fix`, corrupt and legacy directories are deleted (under their lock) so the next run rebuilds what it
    needs; only directories that carry a harness marker and lie inside the cache (a linked folder that resolves
    elsewhere is left alone) are ever deleted."""
    from bench.errors import BenchError
    from bench.store.locks import locked

    root = Path(root or cache_root())
    dirs = published_dirs(root)
    bad, legacy, outcome = [], [], {}
    for d, marker in dirs:
        found = problems(d, marker)
        if not found:
            continue
        if is_legacy(d, marker):
            legacy.append(d)
        else:
            bad.append((d, found[0]))
        if fix:
            with locked(lock_file(d), f"{MARKERS[marker]} {d.name}"):
                try:
                    if problems(d, marker):
                        remove_owned(d, root, marker)
                    outcome[d] = "deleted"
                except BenchError as e:
                    outcome[d] = f"kept ({e})"
    return len(dirs), bad, legacy, outcome

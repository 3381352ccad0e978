"""`bench cache verify`: check every published directory of the cache (stages, signal entries, converted models,
reward models) and, optionally, every run directory, against the checksums recorded when they were written."""
from __future__ import annotations

from pathlib import Path

from bench.paths import cache_root
from bench.stages import lock_file, problems, remove_owned

# marker file -> what the directory holding it is
MARKERS = {"stage.json": "stage", "manifest.json": "signal cache entry", "bench_model.json": "converted model",
           "bench_rm.json": "reward model", ".complete": "lm-eval task folder"}


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


def verify_cache(fix: bool = False, root: Path | None = None) -> tuple[int, list[tuple[Path, str]]]:
    """(number checked, [(directory, first problem)]). With `fix`, corrupt directories are deleted (under their
    lock) so the next run rebuilds them; only directories that carry a harness marker are ever deleted."""
    from bench.locks import locked

    root = Path(root or cache_root())
    dirs = published_dirs(root)
    bad = []
    for d, marker in dirs:
        found = problems(d, marker)
        if not found:
            continue
        bad.append((d, found[0]))
        if fix:
            with locked(lock_file(d), f"{MARKERS[marker]} {d.name}"):
                if problems(d, marker):
                    remove_owned(d, root, marker)
    return len(dirs), bad

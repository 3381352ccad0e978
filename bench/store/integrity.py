"""Checksums of everything the harness writes, checked on every read, and content hashes of user inputs.

* `file_digest`: xxh3-128 of a file's bytes (the `xxhash` library: ~10x faster than sha256 here, which matters
  when a stage holds a 500 MB model). Used for integrity, not for security.
* `record_files(root)` lists every file below a directory with its size and digest; the record is stored in the
  directory's own metadata (stage.json, a signal entry's manifest.json, a run's .bench-run.json) and
  `verify_files(root, record)` re-checks it. A missing, truncated or bit-flipped file is reported by name.
  Successful checks are memoised per process by (path, size, mtime), so a pipeline that opens the same stage
  several times hashes it once.
* `dir_content_hash(path)`: the identity of a user's local model directory (every file's name and digest),
  memoised on disk by (size, mtime) so an unchanged 16 GB checkpoint is hashed once, not on every run.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import xxhash

from bench.errors import BenchError

_CHUNK = 1 << 23
_VERIFIED: dict[tuple[str, int, int], str] = {}


def file_digest(path: str | Path) -> str:
    h = xxhash.xxh3_128()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _stat_key(path: Path) -> tuple[str, int, int]:
    st = path.stat()
    return str(path.resolve()), st.st_size, st.st_mtime_ns


def _files(root: Path, exclude: tuple[str, ...]) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.relative_to(root).as_posix() not in exclude
                  and not p.name.startswith(".lock"))


def record_files(root: str | Path, exclude: tuple[str, ...] = ()) -> dict[str, dict]:
    """{relative path: {"size", "xxh3"}} of every file below `root` except `exclude` (relative paths)."""
    root = Path(root)
    out = {}
    for p in _files(root, exclude):
        digest = file_digest(p)
        _VERIFIED[_stat_key(p)] = digest
        out[p.relative_to(root).as_posix()] = {"size": p.stat().st_size, "xxh3": digest}
    return out


def check_files(root: str | Path, record: dict[str, dict]) -> list[str]:
    """Problems (one short phrase each) of the files below `root` against `record`; [] when all match."""
    root = Path(root)
    problems = []
    for rel, info in sorted(record.items()):
        p = root / rel
        if not p.is_file():
            problems.append(f"{rel} is missing")
            continue
        key = _stat_key(p)
        if key[1] != info.get("size"):
            problems.append(f"{rel} has {key[1]} bytes, expected {info.get('size')} (truncated or overwritten)")
            continue
        digest = _VERIFIED.get(key) or file_digest(p)
        if digest != info.get("xxh3"):
            problems.append(f"{rel} does not match its checksum (corrupted)")
            continue
        _VERIFIED[key] = digest
    return problems


def verify_files(root: str | Path, record: dict[str, dict] | None, what: str, fix: str) -> None:
    """Raise one BenchError naming the first bad file of `root` and the fix; a missing record is an error too
    (everything this version writes carries one)."""
    if not isinstance(record, dict):
        raise BenchError(f"{what} {root} has no checksum record (written by an older version or damaged); {fix}")
    problems = check_files(root, record)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise BenchError(f"{what} {root} is corrupt: {problems[0]}{more}; {fix}")


def read_json(path: str | Path, what: str, fix: str) -> dict:
    """Parse a JSON object file; a missing, truncated or non-object file is one BenchError naming it."""
    path = Path(path)
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BenchError(f"{what} {path} is missing; {fix}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BenchError(f"{what} {path} is unreadable ({e.__class__.__name__}: truncated or corrupted); {fix}") from None
    if not isinstance(obj, dict):
        raise BenchError(f"{what} {path} is not a JSON object (corrupted); {fix}")
    return obj


# ---------------------------------------------------------------------------------------------- input identity
def _memo_path() -> Path:
    from bench.paths import cache_root

    return cache_root() / "hash-memo.json"


def dir_content_hash(path: str | Path) -> str:
    """Content identity of a local directory: names and digests of its files (hidden files and locks excluded).
    Each file's digest is memoised on disk by (resolved path, size, mtime_ns): only changed files are re-read."""
    from bench.store.files import atomic_write_json
    from bench.store.locks import locked

    root = Path(path)
    files = [p for p in _files(root, ()) if not any(part.startswith(".") for part in p.relative_to(root).parts)]
    memo_file = _memo_path()
    with locked(memo_file.with_suffix(".lock")):
        try:
            memo = json.loads(memo_file.read_text())
        except (OSError, json.JSONDecodeError):
            memo = {}
        h = xxhash.xxh3_128()
        changed = False
        for p in files:
            k = "|".join(map(str, _stat_key(p)))
            digest = memo.get(k)
            if digest is None:
                digest = memo[k] = file_digest(p)
                changed = True
            h.update(f"{p.relative_to(root).as_posix()}\0{digest}\n".encode())
        if changed:
            atomic_write_json(memo_file, memo)
    return h.hexdigest()


def source_hash(path: str | Path) -> str:
    """Digest of one file's bytes, memoised in this process (for small inputs such as preset YAMLs, GGUF files)."""
    p = Path(path)
    key = _stat_key(p)
    if key not in _VERIFIED:
        _VERIFIED[key] = file_digest(p)
    return _VERIFIED[key]


def env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")

"""Content-addressed stage cache: a stage's output directory is named by the hash of everything it depends on.

Every published directory (a stage, a signal entry, a converted model, a reward model, ...) follows one protocol,
`ensure_published`:
* one cross-process lock per directory (bench.store.locks): a second process waits, then reuses the result;
* built in a fresh temp dir beside the final one and renamed into place in one step, so the final name only ever
  holds a complete result; temp dirs left by a killed builder are removed by the next lock holder (no pid checks:
  whoever holds the lock is the only builder there can be);
* a marker file (e.g. stage.json) written last records the checksum of every file; every reuse verifies them
  (memoised per process) and a corrupt directory is rebuilt with a warning line instead of being used.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

from bench.errors import BenchError
from bench.faults import fault_point
from bench.paths import cache_root
from bench.store.files import atomic_write_json, share_files
from bench.store.integrity import check_files, read_json, record_files
from bench.store.locks import locked

STAGE_MARKER = "stage.json"


def content_key(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:20]


def stage_path(kind: str, key: dict) -> Path:
    return cache_root() / "stages" / kind / content_key(key)


def lock_file(final: Path) -> Path:
    return Path(final).parent / ".locks" / f"{Path(final).name}.lock"


def is_done(path: Path, marker: str = STAGE_MARKER) -> bool:
    return (Path(path) / marker).exists()


def remove_owned(path: Path, root: Path, marker: str | None) -> None:
    """Delete `path` only if it lies strictly inside `root` (after resolving links) and, when `marker` is given,
    holds that marker file: the only directories the harness ever deletes are ones it proved are its own."""
    path, root = Path(path), Path(root)
    if path.is_symlink():
        raise BenchError(f"refusing to delete {path}: it is a symbolic link, not a directory the harness made")
    real, real_root = path.resolve(), root.resolve()
    if real == real_root or real_root not in real.parents:
        raise BenchError(f"refusing to delete {path}: it is not inside {root}")
    if marker is not None and not (real / marker).exists():
        raise BenchError(f"refusing to delete {path}: it has no {marker}, so it is not the harness's own")
    shutil.rmtree(real)


def _clear_leftovers(final: Path) -> None:
    """Under the lock: temp dirs of `final` can only be left by a builder that died."""
    for tmp in final.parent.glob(f".{final.name}.tmp-*"):
        if tmp.is_dir() and not tmp.is_symlink():
            shutil.rmtree(tmp, ignore_errors=True)


def problems(final: Path, marker: str = STAGE_MARKER) -> list[str]:
    """Why the published directory `final` cannot be trusted ([] when it is complete and every checksum holds)."""
    try:
        meta = read_json(Path(final) / marker, "marker", "")
    except BenchError as e:
        return [str(e).rstrip("; ")]
    files = meta.get("files")
    if not isinstance(files, dict):
        return [f"{marker} has no checksum record (made by an older version)"]
    return check_files(final, files)


_RECORDERS: list[set[str]] = []  # entries used outside any build (a run's direct uses)
_FRAMES: list[list[str]] = []  # builds in progress, innermost last: the entries each one used


def cache_relative(path: Path) -> str:
    try:
        return Path(path).resolve().relative_to(cache_root().resolve()).as_posix()
    except ValueError:
        return str(path)


def _recording_deps(build: Callable[[Path], dict | None]) -> Callable[[Path], dict]:
    """`build` whose metadata gains `deps`: the published entries it used (relative to the cache root)."""
    def wrapped(tmp: Path) -> dict:
        _FRAMES.append([])
        try:
            meta = build(tmp) or {}
        finally:
            deps = _FRAMES.pop()
        return {**meta, "deps": deps}
    return wrapped


@contextmanager
def recording_use():
    """Collect the path of every published directory used (built or reused) inside the block, outside of other
    entries' builds (those become the building entry's `deps`): `bench.pipeline.costs.closure` follows the deps, and a
    run records the whole closure in its manifest (costs, and `bench cache ls|gc` knowing which runs use what)."""
    used: set[str] = set()
    _RECORDERS.append(used)
    try:
        yield used
    finally:
        _RECORDERS.remove(used)


def use_stamp(final: Path) -> Path:
    """The file whose mtime is the last time `final` was used (beside its lock file; the entry itself is never
    touched after it is published)."""
    return lock_file(final).with_suffix(".used")


def _note_use(final: Path, marker: str) -> Path:
    """Record a use of `final`: in the active recorders, and as the mtime of its use stamp (the "last used" time
    that `bench cache gc --older-than` reads)."""
    if _FRAMES:  # used while building another entry: one of its dependencies
        rel = cache_relative(final)
        if rel not in _FRAMES[-1]:
            _FRAMES[-1].append(rel)
    else:
        for used in _RECORDERS:
            used.add(str(final))
    stamp = use_stamp(final)
    try:
        stamp.parent.mkdir(parents=True, exist_ok=True)
        stamp.touch()
    except OSError:  # a read-only shared cache: usable, only its last-use times stay put
        pass
    return final


def ensure_published(final: Path, build: Callable[[Path], dict | None], *, marker: str = STAGE_MARKER,
                     what: str = "stage", fault: str = "stage-build") -> Path:
    """Return the verified directory `final`, building it first (under its lock) if it is missing or corrupt.

    `build(tmp)` fills the temp dir and returns metadata; the marker file gets that metadata plus the checksum of
    every file, and is written last."""
    return _note_use(_ensure_published(Path(final), _recording_deps(build), marker, what, fault), marker)


def _ensure_published(final: Path, build, marker: str, what: str, fault: str) -> Path:
    from bench import dist

    if dist.world() > 1:
        return _ensure_collectively(final, build, marker=marker, what=what, fault=fault)
    if is_done(final, marker) and not problems(final, marker):
        return final
    with locked(lock_file(final), f"{what} {final.name}"):
        tmp = _prepare_build(final, marker, what)
        if tmp is None:
            return final  # another process built it while we waited
        try:
            meta = build(tmp) or {}
            share_files(tmp)
            atomic_write_json(tmp / marker, {**meta, "files": record_files(tmp, exclude=(marker,))})
            fault_point(fault)
            tmp.rename(final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return final


def _prepare_build(final: Path, marker: str, what: str) -> Path | None:
    """Under the lock: None when `final` is complete and verified, else a fresh temp dir to build in (a corrupt
    `final` is removed with a warning, leftovers of killed builders are cleared)."""
    if is_done(final, marker):
        bad = problems(final, marker)
        if not bad:
            return None
        from bench.progress import console

        console.print(f"[yellow]warning: {what} {final} is corrupt ({bad[0]}); rebuilding it")
        remove_owned(final, final.parent, marker)
    elif final.exists():
        raise BenchError(f"{final} exists but is not a complete {what} (no {marker}); move it away and rerun")
    _clear_leftovers(final)
    tmp = final.parent / f".{final.name}.tmp-{uuid.uuid4().hex[:12]}"
    tmp.mkdir(parents=True)
    return tmp


def _ensure_collectively(final: Path, build, *, marker: str, what: str, fault: str) -> Path:
    """The same protocol under `accelerate launch`: process 0 holds the lock and decides, every process runs
    `build(tmp)` (data-parallel training, or its slice of a sharded pass, writing only what `bench.dist` lets it),
    process 0 writes the marker and publishes, then everyone proceeds."""
    from contextlib import nullcontext

    from bench import dist

    main = dist.is_main()
    with locked(lock_file(final), f"{what} {final.name}") if main else nullcontext():
        tmp = _prepare_build(final, marker, what) if main else None
        tmp = dist.broadcast(None if tmp is None else str(tmp))
        if tmp is None:
            return final
        tmp = Path(tmp)
        try:
            meta = build(tmp) or {}
            dist.barrier()  # every process's part is in tmp
            if main:
                atomic_write_json(tmp / marker, {**meta, "files": record_files(tmp, exclude=(marker,))})
                fault_point(fault)
                tmp.rename(final)
        except BaseException:
            if main:
                shutil.rmtree(tmp, ignore_errors=True)
            raise
    dist.barrier()  # published: every process may read it
    return final


def build_stage(kind: str, key: dict, build: Callable[[Path], dict | None]) -> Path:
    """Return the stage dir for `key`, calling `build(tmp_dir)` first if it is not cached (or is corrupt)."""
    return ensure_published(stage_path(kind, key), lambda tmp: {"kind": kind, "key": key, **(build(tmp) or {})},
                            what=f"{kind} stage")


def token_hash(pairs) -> str:
    h = hashlib.sha256()
    for item in pairs:
        h.update(json.dumps(item).encode())
    return h.hexdigest()[:20]

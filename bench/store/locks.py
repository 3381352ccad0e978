"""Cross-process locks (the `filelock` library) for everything two `bench` processes could build or write at once:
one lock per stage key, per signal entry, per converted model and per run directory.

`filelock.FileLock` takes an OS lock (`fcntl.flock`) on a lock file: the kernel releases it when the holder dies,
kill -9 included, so there is no stale-lock clean-up and no pid-liveness check; on a filesystem shared by several
nodes (NFS v4, Lustre, GPFS with locking enabled) the lock is held across nodes. Lock files are tiny, left in place
(removing one while another process waits on it would break mutual exclusion), and live in `.locks/` folders.

A process that has to wait says so once on stderr, then waits (default: without limit; `BENCH_LOCK_TIMEOUT`
seconds caps it with one clear error).
"""
from __future__ import annotations

import os
import threading
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from bench.errors import BenchError

_HELD: dict[str, int] = {}
_HELD_LOCK = threading.Lock()


def _timeout() -> float:
    raw = os.environ.get("BENCH_LOCK_TIMEOUT", "")
    try:
        return float(raw) if raw else -1.0
    except ValueError:
        raise BenchError(f"BENCH_LOCK_TIMEOUT={raw!r} is not a number of seconds; unset it or pass e.g. 600") from None


class Busy(BenchError):
    """`locked(..., wait=False)`: another process holds the lock."""


@contextmanager
def locked(lock_path: str | Path, what: str = "", wait: bool = True):
    """Hold the lock file `lock_path` (created with its folder). Re-entrant within a process (a stage that
    builds a dependency of the same key never deadlocks on itself). `wait=False`: raise `Busy` at once when
    another process holds it."""
    lock_path = Path(lock_path)
    try:
        lock_path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise BenchError(f"cannot create the lock folder {lock_path.parent} ({e.strerror}); make it writable or "
                         "point BENCH_CACHE / --runs at a writable directory") from None
    key = str(lock_path.resolve())
    with _HELD_LOCK:
        if _HELD.get(key, 0) > 0:
            _HELD[key] += 1
            reentrant = True
        else:
            reentrant = False
    if reentrant:
        try:
            yield
        finally:
            with _HELD_LOCK:
                _HELD[key] -= 1
        return
    lock = FileLock(str(lock_path), is_singleton=False)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        if not wait:
            raise Busy(f"{what or lock_path} is in use by another bench process") from None
        from bench.progress import console

        console.print(f"[yellow]waiting for another bench process that holds {what or lock_path.name} ...")
        limit = _timeout()
        try:
            lock.acquire(timeout=limit)
        except Timeout:
            raise BenchError(f"gave up after {limit:g}s waiting for {what or lock_path}, held by another bench "
                             "process; wait for it to finish, or raise BENCH_LOCK_TIMEOUT") from None
    except OSError as e:
        raise BenchError(f"cannot lock {lock_path} ({e.strerror}); make the folder writable") from None
    with _HELD_LOCK:
        _HELD[key] = 1
    try:
        yield
    finally:
        with _HELD_LOCK:
            _HELD[key] = 0
        lock.release()

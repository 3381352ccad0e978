"""Where the project keeps its configs and its content-addressed cache."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = Path(os.environ.get("BENCH_CONFIG_DIR", REPO_ROOT / "configs"))


_WRITABLE: set[str] = set()


def writable_dir(path: Path, what: str, fix: str) -> Path:
    """Create `path` if needed and prove a file can be written in it (once per process); else one BenchError
    saying `what` could not be written and `fix`."""
    from bench.errors import BenchError

    if str(path) in _WRITABLE:
        return path
    if path.exists() and not path.is_dir():
        raise BenchError(f"{what} {path} is not a directory; {fix}")
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=path, prefix=".write-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise BenchError(f"cannot write to {what} {path} ({e.strerror or e.__class__.__name__}); {fix}") from None
    _WRITABLE.add(str(path))
    return path


def cache_root() -> Path:
    """`$BENCH_CACHE`, else ~/.cache/prefdistill-bench; created if needed, and refused (one error line) when it
    cannot be written."""
    root = Path(os.environ.get("BENCH_CACHE") or Path.home() / ".cache" / "prefdistill-bench").expanduser()
    return writable_dir(root, "the cache directory", "set BENCH_CACHE to a writable directory")

"""Where the project keeps its configs and its content-addressed cache."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = Path(os.environ.get("BENCH_CONFIG_DIR", REPO_ROOT / "configs"))


_WRITABLE: set[str] = set()


def cache_root() -> Path:
    """`$BENCH_CACHE`, else ~/.cache/prefdistill-bench; created if needed, and refused (one error line) when it
    cannot be written."""
    from bench.errors import BenchError

    root = Path(os.environ.get("BENCH_CACHE") or Path.home() / ".cache" / "prefdistill-bench").expanduser()
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise BenchError(f"cannot create the cache directory {root} ({e.strerror or e.__class__.__name__}); set "
                         "BENCH_CACHE to a writable directory") from None
    if str(root) not in _WRITABLE:
        try:
            fd, probe = tempfile.mkstemp(dir=root, prefix=".write-probe-")
            os.close(fd)
            os.unlink(probe)
        except OSError as e:
            raise BenchError(f"cannot write to the cache directory {root} ({e.strerror or e.__class__.__name__}); "
                             "set BENCH_CACHE to a writable directory") from None
        _WRITABLE.add(str(root))
    return root

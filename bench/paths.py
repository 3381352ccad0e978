"""Where the project keeps its configs and its content-addressed cache."""
from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = Path(os.environ.get("BENCH_CONFIG_DIR", REPO_ROOT / "configs"))


def cache_root() -> Path:
    """`$BENCH_CACHE`, else ~/.cache/prefdistill-bench."""
    root = Path(os.environ.get("BENCH_CACHE", Path.home() / ".cache" / "prefdistill-bench"))
    root.mkdir(parents=True, exist_ok=True)
    return root

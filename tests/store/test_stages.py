"""bench/store/stages.py (+ bench/store/rundir.py atomic writes): content-addressed stages, built atomically, reused once done,
stale temp dirs of dead processes cleaned."""
from __future__ import annotations

import json
import os
import shutil

import pytest

from bench.paths import cache_root
from bench.store.files import atomic_write_json, read_jsonl, write_jsonl
from bench.signals.cache import write_entry
from bench.store.stages import build_stage, content_key, is_done, stage_path, token_hash

pytestmark = pytest.mark.usefixtures("single_thread_module")


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    """These tests make throw-away stages: keep them out of the session cache."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("BENCH_CACHE", str(cache))
    return cache


def test_content_key_is_stable_and_order_independent():
    a = content_key({"x": 1, "y": [1, 2], "z": {"b": 2, "a": 1}})
    b = content_key({"z": {"a": 1, "b": 2}, "y": [1, 2], "x": 1})
    assert a == b and len(a) == 20
    assert content_key({"x": 1}) != content_key({"x": 2}) != content_key({"x": "1"})
    assert token_hash([([1, 2], [3])]) == token_hash([([1, 2], [3])]) != token_hash([([1, 2], [4])])
    assert token_hash([([1], [2, 3])]) != token_hash([([1, 2], [3])])  # prompt/response boundary matters


def test_stage_path_lives_under_the_cache(own_cache):
    p = stage_path("unit_test_kind", {"k": 1})
    assert p.parent == own_cache / "stages" / "unit_test_kind" and p.name == content_key({"k": 1})
    assert cache_root() == own_cache and own_cache.is_dir()


def test_build_stage_builds_once_then_reuses(tmp_path):
    calls = []

    def build(tmp):
        calls.append(tmp)
        (tmp / "out.txt").write_text("hello")
        return {"n": 1}

    key = {"unit": "build-once", "nonce": str(tmp_path)}
    path = build_stage("unit_test_kind", key, build)
    assert is_done(path) and (path / "out.txt").read_text() == "hello"
    meta = json.loads((path / "stage.json").read_text())
    assert {k: meta[k] for k in ("kind", "key", "n")} == {"kind": "unit_test_kind", "key": key, "n": 1}
    assert meta["files"]["out.txt"]["size"] == 5  # every file's checksum is recorded
    assert calls[0] != path and not calls[0].exists()  # built in a temp dir, renamed into place
    assert build_stage("unit_test_kind", key, build) == path
    assert len(calls) == 1


def test_failed_or_interrupted_build_leaves_nothing(tmp_path):
    for exc in (RuntimeError("boom"), KeyboardInterrupt()):
        key = {"unit": "fails", "nonce": str(tmp_path), "exc": type(exc).__name__}

        def build(tmp, exc=exc):
            (tmp / "half.bin").write_bytes(b"x")
            raise exc

        with pytest.raises(type(exc)):
            build_stage("unit_test_kind", key, build)
        final = stage_path("unit_test_kind", key)
        assert not final.exists()
        assert not list(final.parent.glob(f".{final.name}.tmp-*"))


def test_temp_dirs_left_by_killed_builders_are_removed_under_the_lock(tmp_path):
    """Whoever holds a stage's lock is its only possible builder, so every temp dir of that stage is a leftover
    (no pid checks, which would be wrong on a filesystem shared by several nodes)."""
    key = {"unit": "stale", "nonce": str(tmp_path)}
    final = stage_path("unit_test_kind", key)
    final.parent.mkdir(parents=True, exist_ok=True)
    left = [final.parent / f".{final.name}.tmp-{n}" for n in ("999999999", str(os.getppid()), "0a1b2c")]
    other = final.parent / f".other.tmp-{os.getppid()}"  # another stage's temp dir is not touched
    for d in (*left, other):
        d.mkdir()
    try:
        build_stage("unit_test_kind", key, lambda tmp: None)
        assert not any(d.exists() for d in left) and other.exists() and is_done(final)
    finally:
        shutil.rmtree(other, ignore_errors=True)


def test_signal_entry_cleans_stale_temp_dirs(tmp_path):
    dead = tmp_path / ".entry.tmp-999999999"
    dead.mkdir()
    write_entry(tmp_path / "entry", {}, lambda writers: None)
    assert not dead.exists() and (tmp_path / "entry" / "manifest.json").exists()


def test_atomic_json_and_jsonl(tmp_path):
    atomic_write_json(tmp_path / "a" / "m.json", {"b": 1, "a": [1, "é"]})
    assert json.loads((tmp_path / "a" / "m.json").read_text(encoding="utf-8")) == {"a": [1, "é"], "b": 1}
    write_jsonl(tmp_path / "r.jsonl", [{"i": 1}, {"i": 2, "t": "x\ny"}])
    assert read_jsonl(tmp_path / "r.jsonl") == [{"i": 1}, {"i": 2, "t": "x\ny"}]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "r.jsonl"]  # no temp files left

    class Boom:
        pass

    with pytest.raises(TypeError):
        atomic_write_json(tmp_path / "a" / "m.json", {"bad": Boom()})
    assert json.loads((tmp_path / "a" / "m.json").read_text())["b"] == 1  # old content intact
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["m.json"]

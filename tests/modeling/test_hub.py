"""Hub ids offline (bench/modeling/hub.py): a model in the local HF cache loads from its snapshot without the network;
one that is not stops after one probe of the hub (or none, under HF_HUB_OFFLINE) with one line naming the fix,
never through the hub client's retries; `bench run` with such a student writes nothing."""
from __future__ import annotations

import pytest

from bench.errors import BenchError
from bench.modeling import hub
from bench.modeling.models import ensure_model_dir, tokenizer_dir

HUB_ID = "example-org/not-cached-model"


class _CountingSession:
    def __init__(self, error: Exception | None):
        self.calls, self.error = 0, error

    def head(self, url, timeout=None):
        self.calls += 1
        assert timeout is not None and timeout <= hub.PROBE_TIMEOUT_S
        if self.error is not None:
            raise self.error
        return object()


@pytest.fixture
def probe(monkeypatch):
    """Network allowed by the environment; the hub session replaced by a counting fake."""
    import huggingface_hub.utils

    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "BENCH_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    hub.hub_unreachable_reason.cache_clear()
    session = _CountingSession(ConnectionError("Name or service not known"))
    monkeypatch.setattr(huggingface_hub.utils, "get_session", lambda: session)
    yield session
    hub.hub_unreachable_reason.cache_clear()


def _fake_snapshot(root, hf_id: str, commit: str = "0123456789abcdef0123456789abcdef01234567"):
    repo = root / f"models--{hf_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snap = repo / "snapshots" / commit
    snap.mkdir(parents=True)
    (snap / "config.json").write_text("{}")
    return snap


def test_offline_env_fails_at_once_without_a_probe(monkeypatch):
    import huggingface_hub.utils

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub.hub_unreachable_reason.cache_clear()
    session = _CountingSession(None)
    monkeypatch.setattr(huggingface_hub.utils, "get_session", lambda: session)
    with pytest.raises(BenchError) as err:
        ensure_model_dir(HUB_ID)
    msg = str(err.value)
    assert "HF_HUB_OFFLINE is set" in msg and f"hf download {HUB_ID} --local-dir DIR" in msg
    assert "--student DIR" in msg and "\n" not in msg
    assert session.calls == 0
    hub.hub_unreachable_reason.cache_clear()


def test_unreachable_hub_is_probed_once_per_process(probe):
    for load in (tokenizer_dir, ensure_model_dir, tokenizer_dir):
        with pytest.raises(BenchError, match="the hub cannot be reached \\(Name or service not known\\)"):
            load(HUB_ID)
    assert probe.calls == 1


def test_preset_names_its_hub_id_in_the_error(probe):
    with pytest.raises(BenchError, match=r"model 'llama-3\.2-1b' \(hub id meta-llama/Llama-3\.2-1B\)"):
        ensure_model_dir("llama-3.2-1b")


def test_reachable_hub_loads_by_id(probe):
    probe.error = None
    assert ensure_model_dir(HUB_ID) == HUB_ID and probe.calls == 1


def test_cached_model_loads_from_its_snapshot_without_the_network(probe, tmp_path, monkeypatch):
    from huggingface_hub import constants

    snap = _fake_snapshot(tmp_path, HUB_ID)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    assert ensure_model_dir(HUB_ID) == str(snap) and tokenizer_dir(HUB_ID) == str(snap)
    assert probe.calls == 0


def test_bench_run_with_an_unreachable_hub_student_writes_nothing(probe, tmp_path, monkeypatch, capsys):
    from cli_kit import assert_one_line_error, bench_main

    runs, cache = tmp_path / "runs", tmp_path / "cache"
    monkeypatch.setenv("BENCH_CACHE", str(cache))
    code, _, err = bench_main(monkeypatch, capsys, "run", "--method", "tvkd", "--student", "llama-3.2-1b",
                              "--runs", str(runs))
    assert_one_line_error(code, err, "hub id meta-llama/Llama-3.2-1B", "--student DIR")
    assert probe.calls == 1
    assert not runs.exists() or not any(runs.iterdir())

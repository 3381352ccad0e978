"""The shared judge client against real local HTTP servers: retries, timeouts, parse policy, cache, resume."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "fixtures" / "eval"))
from evalkit import ScriptedJudge, free_port  # noqa: E402

from bench.errors import BenchError  # noqa: E402
from bench.evaluators.judge import JudgeClient, JudgeConfig, JudgeRequest, JudgmentCache, safe_url  # noqa: E402
from bench.evaluators.mtbench import parse_rating  # noqa: E402

pytestmark = pytest.mark.timeout(120)


def _client(base_url, cache, **kw) -> JudgeClient:
    settings = {"judge_base_url": base_url, "judge_model": "judge-x", "judge_backoff": 0.01, "judge_max_retries": 2,
                "judge_timeout": 5, "judge_workers": 2, **kw}
    return JudgeClient(JudgeConfig.from_settings(settings, default_model="unused"), cache)


def _reqs(n, tag="t"):
    return [JudgeRequest(messages=[{"role": "user", "content": f"grade item {i}"}], tag=tag, meta={"i": i})
            for i in range(n)]


def test_parse_rating_follows_fastchat():
    assert parse_rating("Rating: [[8]]") == 8.0
    assert parse_rating("I give it [[7.5]] overall") == 7.5
    assert parse_rating("backup form [6]") == 6.0  # FastChat's backup pattern
    assert parse_rating("no rating here") is None
    assert parse_rating("[[11]]") is None and parse_rating("[[0]]") is None  # outside 1-10
    assert parse_rating("") is None


def test_judgments_are_parsed_cached_and_reused(tmp_path):
    with ScriptedJudge(reply=lambda body, n: f"fine answer [[{3 + n % 5}]]") as srv:
        client = _client(srv.base_url, tmp_path)
        out = client.judge_many(_reqs(4), parse_rating)
        assert len(srv.requests) == 4
        assert sorted(r["parsed"] for r in out) == sorted(3.0 + n % 5 for n in range(4))
        assert [r["meta"]["i"] for r in out] == [0, 1, 2, 3]
        assert all(not r["cached"] for r in out)
        assert srv.requests[0]["model"] == "judge-x" and srv.requests[0]["temperature"] == 0.0
        # a new client (new process) against another URL reuses them: the key does not depend on base_url
    with ScriptedJudge(reply="[[1]]") as other:
        again = _client(other.base_url, tmp_path).judge_many(_reqs(4), parse_rating)
        assert len(other.requests) == 0
        assert [r["parsed"] for r in again] == [r["parsed"] for r in out]
        assert all(r["cached"] for r in again)
    lines = (tmp_path / "judgments").glob("*.jsonl")
    rows = [json.loads(line) for f in lines for line in f.read_text().splitlines()]
    assert len(rows) == 4 and all(r["model"] == "judge-x" for r in rows)


def test_malformed_output_is_retried_then_recorded_unparsed(tmp_path):
    with ScriptedJudge(reply="I cannot decide.") as srv:
        client = _client(srv.base_url, tmp_path, judge_parse_retries=2, judge_workers=1)
        (res,) = client.judge_many(_reqs(1), parse_rating)
        assert len(srv.requests) == 3  # first try + 2 parse retries
        assert res["parsed"] is None and res["raw"] == "I cannot decide." and res["attempts"] == 3
        # reused on rerun (no new calls) ...
        client2 = _client(srv.base_url, tmp_path, judge_parse_retries=2)
        assert client2.judge_many(_reqs(1), parse_rating)[0]["cached"] is True
        assert len(srv.requests) == 3
        # ... unless asked to retry unparsed judgments
        client3 = _client(srv.base_url, tmp_path, judge_parse_retries=0, judge_retry_unparsed=True)
        client3.judge_many(_reqs(1), parse_rating)
        assert len(srv.requests) == 4


def test_malformed_then_good_output_parses_on_retry(tmp_path):
    with ScriptedJudge(reply=["no score, sorry", "ok then [[6]]"]) as srv:
        (res,) = _client(srv.base_url, tmp_path, judge_workers=1).judge_many(_reqs(1), parse_rating)
        assert res["parsed"] == 6.0 and res["attempts"] == 2 and len(srv.requests) == 2


def test_http_500_is_retried_with_backoff_then_one_clear_error(tmp_path):
    with ScriptedJudge(status=500) as srv:
        client = _client(srv.base_url, tmp_path, judge_max_retries=3, judge_backoff=0.05)
        slept = []
        client._sleep = slept.append
        with pytest.raises(BenchError) as e:
            client.judge_many(_reqs(1), parse_rating)
        assert len(srv.requests) == 4  # 1 + 3 retries
        # jittered exponential backoff: retry i sleeps a random time in [d/2, d], d = 0.05 * 2^(i-1)
        assert len(slept) == 3
        for i, s in enumerate(slept):
            assert 0.05 * 2 ** i / 2 <= s <= 0.05 * 2 ** i
        msg = str(e.value)
        assert "HTTP 500" in msg and "4 attempt" in msg and "rerun" in msg and "\n" not in msg


def test_client_error_fails_at_once(tmp_path):
    with ScriptedJudge(status=404) as srv:
        with pytest.raises(BenchError, match="rejected the request with HTTP 404.*judge_model 'judge-x'"):
            _client(srv.base_url, tmp_path).judge_many(_reqs(1), parse_rating)
        assert len(srv.requests) == 1


def test_timeout_gives_a_clear_error(tmp_path):
    with ScriptedJudge(delay=2.0) as srv:
        client = _client(srv.base_url, tmp_path, judge_timeout=0.3, judge_max_retries=1)
        with pytest.raises(BenchError, match=r"timed out after 2 attempt\(s\) of 0.3s.*judge_timeout"):
            client.judge_many(_reqs(1), parse_rating)
        assert len(srv.requests) == 2


def test_server_down_gives_a_clear_error(tmp_path):
    url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    with pytest.raises(BenchError, match=r"judge endpoint http://127.0.0.1:\d+/v1 unreachable after 3 attempt"):
        _client(url, tmp_path).judge_many(_reqs(1), parse_rating)


def test_failure_keeps_finished_judgments_and_a_rerun_resumes(tmp_path):
    # the server answers the first two requests, then fails with 500 for good
    with ScriptedJudge(reply="[[9]]", status=lambda n: 200 if n < 2 else 500) as srv:
        client = _client(srv.base_url, tmp_path, judge_workers=1, judge_max_retries=1)
        with pytest.raises(BenchError, match="HTTP 500"):
            client.judge_many(_reqs(5), parse_rating)
    assert len(JudgmentCache(tmp_path, "judge-x")) == 2
    with ScriptedJudge(reply="[[4]]") as srv2:
        out = _client(srv2.base_url, tmp_path).judge_many(_reqs(5), parse_rating)
        assert len(srv2.requests) == 3  # only the missing ones
        assert sorted(r["parsed"] for r in out) == [4.0, 4.0, 4.0, 9.0, 9.0]


def test_torn_cache_line_is_ignored(tmp_path):
    with ScriptedJudge(reply="[[5]]") as srv:
        _client(srv.base_url, tmp_path).judge_many(_reqs(2), parse_rating)
        cache_file = next((tmp_path / "judgments").glob("*.jsonl"))
        with open(cache_file, "a") as f:
            f.write('{"key": "half-written')  # a crash mid-append
        assert len(JudgmentCache(tmp_path, "judge-x")) == 2


def test_api_key_comes_from_env_and_is_never_written(tmp_path, monkeypatch):
    secret = "sk-test-SECRET-0123456789"
    monkeypatch.setenv("MY_JUDGE_KEY", secret)
    with ScriptedJudge(reply="[[5]]") as srv:
        client = _client(srv.base_url, tmp_path, judge_api_key_env="MY_JUDGE_KEY")
        client.judge_many(_reqs(2), parse_rating)
        assert srv.auth[0] == f"Bearer {secret}"
    for f in tmp_path.rglob("*"):
        if f.is_file():
            assert secret not in f.read_text(errors="ignore")
    assert secret not in json.dumps(client.cfg.describe())


def test_openai_endpoint_without_key_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    cfg = JudgeConfig.from_settings({"judge_base_url": "https://api.openai.com/v1"}, default_model="gpt-4")
    with pytest.raises(BenchError, match=r"export OPENAI_API_KEY"):
        cfg.api_key()


def test_bad_settings_are_clear_errors():
    with pytest.raises(BenchError, match="judge_base_url"):
        JudgeConfig.from_settings({"judge_base_url": "localhost:8000"}, default_model="m")
    with pytest.raises(BenchError, match="judge_max_retries"):
        JudgeConfig.from_settings({"judge_max_retries": "many"}, default_model="m")


def test_safe_url_drops_credentials():
    assert safe_url("http://user:pw@host:8000/v1?x=1") == "http://host:8000/v1"


def test_backoff_is_jittered_so_workers_do_not_retry_in_lockstep():
    from bench.evaluators.judge import backoff_delay

    cfg = JudgeConfig(model="m", backoff=1.0, max_backoff=3.0)
    draws = [backoff_delay(cfg, 3) for _ in range(200)]  # d = min(3, 1 * 2^2) = 3
    assert all(1.5 <= d <= 3.0 for d in draws) and len(set(draws)) > 150


@pytest.mark.parametrize("content_type", ["application/json", "text/html"])
def test_a_non_json_body_is_retried_like_a_5xx_then_one_clear_error(tmp_path, content_type):
    """A proxy's HTML page (or truncated JSON) with status 200: retried, then one line naming the fix."""
    with ScriptedJudge(raw=lambda n: (content_type, b"<html>502 Bad Gateway</html>")) as srv:
        client = _client(srv.base_url, tmp_path, judge_max_retries=2)
        client._sleep = lambda s: None
        with pytest.raises(BenchError) as e:
            client.judge_many(_reqs(1), parse_rating)
        assert len(srv.requests) == 3
        msg = str(e.value)
        assert "malformed body" in msg and "judge_base_url" in msg and "\n" not in msg
        assert not list((tmp_path / "judgments").glob("*.jsonl")) or not any(
            f.read_text().strip() for f in (tmp_path / "judgments").glob("*.jsonl"))  # nothing cached as a verdict


def test_a_malformed_body_then_a_good_one_recovers(tmp_path):
    with ScriptedJudge(raw=lambda n: ("application/json", b'{"choices": [') if n == 0 else None,
                       reply="fine [[8]]") as srv:
        client = _client(srv.base_url, tmp_path, judge_max_retries=2, judge_workers=1)
        client._sleep = lambda s: None
        (res,) = client.judge_many(_reqs(1), parse_rating)
        assert res["parsed"] == 8.0 and len(srv.requests) == 2


def test_error_bodies_that_echo_credentials_are_scrubbed(tmp_path, monkeypatch):
    secret = "sk-live-abcdef1234567890SECRET"
    monkeypatch.setenv("JUDGE_KEY_FOR_TEST", secret)
    body = {"error": {"message": f"Incorrect API key provided: {secret}. Authorization: Bearer {secret}; "
                                 f"api_key={secret} token: tok-9876543210"}}
    with ScriptedJudge(status=401, error_body=body) as srv:
        client = _client(srv.base_url, tmp_path, judge_api_key_env="JUDGE_KEY_FOR_TEST")
        with pytest.raises(BenchError) as e:
            client.judge_many(_reqs(1), parse_rating)
        msg = str(e.value)
        assert "HTTP 401" in msg and secret not in msg and "tok-9876543210" not in msg and "***" in msg
        assert srv.auth[0] == f"Bearer {secret}"  # the key did reach the server, it just never reaches output


def test_scrub_removes_every_credential_form():
    from bench.evaluators.judge import scrub

    text = ('key sk-abcdefghij, "api_key": "xyz123", password=hunter22, Authorization: Bearer abc.def, '
            'https://user:pw@host/v1, plain words stay')
    out = scrub(text, "xyz123")
    for leaked in ("sk-abcdefghij", "xyz123", "hunter22", "abc.def", "user:pw"):
        assert leaked not in out
    assert "plain words stay" in out and "https://***@host/v1" in out

"""`bench serve-teacher` and the client that fills signal entries from it (TRL's get_sequence_logprobs protocol),
on loopback: a served entry equals the local signal pass to float16 rounding; the server answers malformed,
oversized and unauthorised requests with a 4xx and a one-line reason and keeps serving, also under concurrent
clients; the client fails with one error line when the server is unreachable or serves another vocabulary."""
from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request

import pytest
import torch

from bench.errors import BenchError
from bench.signals.compute import compute_side_signals
from bench.signals.remote import TeacherClient
from bench.signals.serve import TOKEN_ENV, Limits, load_scorer, make_server

pytestmark = pytest.mark.usefixtures("single_thread_module")


class Rows:
    """A stand-in for the cache's shard writers: keeps what `add` receives."""

    def __init__(self):
        self.rows = []

    def add(self, **tensors):
        self.rows.append(tensors)


@pytest.fixture(scope="module")
def scorer(tiny_dirs):
    return load_scorer("tiny-random", batch_size=3)


@pytest.fixture
def server(scorer, monkeypatch):
    def start(token: str | None = None, limits: Limits | None = None):
        if token:
            monkeypatch.setenv(TOKEN_ENV, token)
        else:
            monkeypatch.delenv(TOKEN_ENV, raising=False)
        srv = make_server(scorer, "127.0.0.1", 0, limits or Limits(max_sequences=8, max_tokens=400,
                                                                   max_top_logprobs=16, max_body_bytes=20000))
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        started.append(srv)
        return f"http://127.0.0.1:{srv.server_address[1]}"

    started = []
    yield start
    for srv in started:
        srv.shutdown()
        srv.server_close()


def pairs(n: int = 7, seed: int = 0) -> list[tuple[list[int], list[int]]]:
    g = torch.Generator().manual_seed(seed)
    return [(torch.randint(1, 500, (int(torch.randint(2, 9, (1,), generator=g)),), generator=g).tolist(),
             torch.randint(1, 500, (int(torch.randint(1, 12, (1,), generator=g)),), generator=g).tolist())
            for _ in range(n)]


def post(url: str, body, headers: dict | None = None) -> tuple[int, dict]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(url + "/get_sequence_logprobs/", data=data, method="POST",
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_served_entry_equals_the_local_pass_to_float16_rounding(scorer, server):
    url, ps, k = server(), pairs(), 8
    local = {"topk": Rows(), "logps": Rows(), "values": Rows()}
    compute_side_signals(scorer.model, ps, local, k=k, tau=2.0, pad_id=scorer.tok.pad_token_id, batch_size=4,
                         model_key="x", desc="local")
    served = {"topk": Rows(), "logps": Rows()}
    got = TeacherClient(url, batch_size=3).fill(ps, served, k=k, desc="served")
    assert got["requests"] == 3 and got["tokens"] == sum(len(p) + len(r) for p, r in ps)
    step = 2.0 ** -10  # one float16 step of a log-prob in [-2, -1) is 2^-10; relative bound below
    for a, b, (_, resp) in zip(local["topk"].rows, served["topk"].rows, ps):
        assert a["topk_ids"].shape == b["topk_ids"].shape == (len(resp), k)
        assert torch.equal(a["topk_ids"], b["topk_ids"])
        la, lb = a["topk_logps"].double(), b["topk_logps"].double()
        assert b["topk_logps"].dtype == torch.float16
        assert ((la - lb).abs() <= step * la.abs().clamp(min=1.0)).all()  # at most one float16 step apart
        assert (lb <= la + step * la.abs().clamp(min=1.0)).all()
    for a, b in zip(local["logps"].rows, served["logps"].rows):
        assert torch.allclose(a["logps"], b["logps"], atol=1e-5)


def test_bad_requests_get_a_4xx_with_one_line_and_the_server_keeps_serving(server, scorer):
    url = server()
    V = scorer.vocab
    ok = {"sequences": [[1, 2, 3]], "prompt_lengths": [1], "top_logprobs": 4}
    cases = [
        (b"{not json", 400), ([1, 2], 400), ({"sequences": [[1, 2]]}, 400),
        ({**ok, "prompt_lengths": [0]}, 400), ({**ok, "prompt_lengths": [9]}, 400),
        ({**ok, "sequences": [[1, V]]}, 400), ({**ok, "sequences": [[1, "a"]]}, 400),
        ({**ok, "top_logprobs": 17}, 400), ({**ok, "top_logprobs": 0}, 400), ({**ok, "temperature": 0}, 400),
        ({**ok, "response_format": "xml"}, 400),
        ({"sequences": [[1, 2]] * 9, "prompt_lengths": [1] * 9}, 413),
        ({"sequences": [list(range(1, 300)), list(range(1, 200))], "prompt_lengths": [1, 1], "top_logprobs": 4}, 413),
        (b"[" + b"1," * 12000 + b"1]", 413),
    ]
    for body, status in cases:
        code, payload = post(url, body)
        assert code == status, (body if isinstance(body, dict) else body[:40], code, payload)
        assert set(payload) == {"error"} and payload["error"] and "\n" not in payload["error"]
    code, payload = post(url.replace("/get", "") + "/nope", ok)  # unknown endpoint
    assert code == 404
    code, payload = post(url, {**ok, "response_format": "json"})
    assert code == 200 and len(payload["logprobs"][0]) == 2 and len(payload["logprobs"][0][0]) in (4, 5)


def test_bearer_token_from_the_environment(server, monkeypatch):
    url = server(token="s3cret")
    ok = {"sequences": [[1, 2, 3]], "prompt_lengths": [1], "top_logprobs": 2}
    assert post(url, ok)[0] == 401
    assert post(url, ok, {"Authorization": "Bearer wrong"})[0] == 401
    assert post(url, ok, {"Authorization": "Bearer s3cret"})[0] == 200
    client = TeacherClient(url)  # reads the same variable
    assert client.session.headers["Authorization"] == "Bearer s3cret"
    monkeypatch.delenv(TOKEN_ENV)
    with pytest.raises(BenchError, match=f"HTTP 401.*{TOKEN_ENV}"):
        TeacherClient(url).fill(pairs(1), {"topk": Rows(), "logps": Rows()}, k=2, desc="x")


def test_concurrent_clients_get_their_own_answers(server):
    url, k = server(), 4
    ps = [pairs(5, seed) for seed in range(4)]
    alone = []
    for p in ps:
        w = {"topk": Rows(), "logps": Rows()}
        TeacherClient(url, batch_size=2).fill(p, w, k=k, desc="alone")
        alone.append(w)
    results = [None] * 4

    def work(i):
        w = {"topk": Rows(), "logps": Rows()}
        TeacherClient(url, batch_size=2).fill(ps[i], w, k=k, desc="together")
        results[i] = w

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for a, b in zip(alone, results):
        assert b is not None
        for ra, rb in zip(a["topk"].rows, b["topk"].rows):
            assert torch.equal(ra["topk_ids"], rb["topk_ids"]) and torch.equal(ra["topk_logps"], rb["topk_logps"])


def test_unreachable_server_is_one_error_line():
    with pytest.raises(BenchError) as e:
        TeacherClient("http://127.0.0.1:9", retries=1, backoff=0.01, timeout=2).check(None, 4, [1, 2])
    assert "unreachable" in str(e.value) and "bench serve-teacher" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(BenchError, match="not an http"):
        TeacherClient("127.0.0.1:8000")


def test_vocabulary_and_k_are_checked(server, scorer, tiny_tokenizer, monkeypatch):
    url = server()
    client = TeacherClient(url)
    assert client.check(scorer.tok, 8, [1, 2, 3])["tokenizer"]
    with pytest.raises(BenchError, match="at most 16 log-probs"):
        client.check(scorer.tok, 32, [1, 2, 3])
    monkeypatch.setitem(scorer.identity, "tokenizer", "another")
    with pytest.raises(BenchError, match="tokenizer differs"):
        client.check(scorer.tok, 8, [1, 2, 3])
    monkeypatch.setattr(TeacherClient, "info", lambda self: None)  # a server without /info/ (trl vllm-serve): a probe
    assert client.check(scorer.tok, 8, [1, 2, 3])["server_url"] == url

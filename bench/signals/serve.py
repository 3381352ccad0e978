"""`bench serve-teacher MODEL`: a local HF model behind TRL's teacher protocol, so that a teacher too big for the
student's machines can run elsewhere and a user without vLLM can host one.

Endpoints (TRL `trl vllm-serve`, scripts/vllm_serve.py, and its client trl/generation/vllm_client.py):
  GET  /health/                  200 when up
  POST /get_sequence_logprobs/   {"sequences": [[ids]], "prompt_lengths": [int], "top_logprobs": k, "temperature": T,
                                  "response_format": "json" | "binary"}: the teacher-forced prefill of every sequence;
                                 for each completion position (prompt_length ≤ t < len), the top-k log-probs of the
                                 token at t given the tokens before it (descending) and the actual token's log-prob.
                                 binary: base64 float32/int32 arrays logprobs_b64, token_ids_b64 [B, T_max, k],
                                 actual_logprobs_b64, actual_token_ids_b64 [B, T_max, 1], shape, completion_lengths
                                 (padding: −inf / 0); json: logprobs / logprob_token_ids, nested lists, the actual
                                 token appended when outside the top-k (as vLLM's prompt_logprobs do).
  GET  /info/                    ours (not TRL's): model name and content identity, vocabulary size, tokenizer
                                 fingerprint, the request limits; the client checks vocabulary and k against it.
A network service: it listens on 127.0.0.1 unless told otherwise; with BENCH_TEACHER_TOKEN set in its environment
every request must carry `Authorization: Bearer <token>`; a request over the limits (sequences, tokens, k, body
bytes) or malformed gets a 4xx with a one-line reason and the server keeps serving. One model pass at a time (a
lock); requests are read and answered concurrently (ThreadingHTTPServer).
"""
from __future__ import annotations

import base64
import hmac
import json
import math
import os
import threading
from dataclasses import asdict, dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import torch

from bench.modeling.forward import packed_forward, pad_batch
from bench.signals.compute import logsumexp64

TOKEN_ENV = "BENCH_TEACHER_TOKEN"


@dataclass
class Limits:
    max_sequences: int = 64
    max_tokens: int = 32768  # summed over the request's sequences
    max_top_logprobs: int = 100
    max_body_bytes: int = 32 * 2 ** 20


class RequestError(Exception):
    """A client error: HTTP `status` with a one-line reason."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status


def _rows(z: torch.Tensor, labels: torch.Tensor, k: int, temperature: float):
    """Top-k ids and log-probs, and the label's log-prob, of a chunk of logits [c, V] (float64 normaliser)."""
    z = z.float() / temperature
    lse = logsumexp64(z)
    top, ids = z.topk(k, dim=-1)
    actual = z.gather(-1, labels[:, None].long()).squeeze(-1)
    return ids.to(torch.int32), (top.double() - lse[:, None]).float(), (actual.double() - lse).float()


class Scorer:
    """Teacher-forced top-k log-probs of token sequences under one model (the signal pass's own forward)."""

    def __init__(self, model, tokenizer, name: str, identity: dict, batch_size: int = 8):
        self.model, self.tok, self.name = model.eval(), tokenizer, name
        self.identity, self.batch_size = identity, batch_size
        self.vocab = int(model.get_output_embeddings().weight.shape[0])
        self.lock = threading.Lock()

    @torch.no_grad()
    def score(self, sequences: list[list[int]], prompt_lengths: list[int], k: int, temperature: float):
        """Per sequence (top-k ids [T, k], top-k log-probs [T, k], actual log-probs [T]) over its completion."""
        out = []
        pairs = [(s[:p], s[p:]) for s, p in zip(sequences, prompt_lengths)]
        with self.lock:
            for start in range(0, len(pairs), self.batch_size):
                chunk = pairs[start:start + self.batch_size]
                batch = pad_batch(chunk, self.tok.pad_token_id if self.tok.pad_token_id is not None else 0)
                packed = packed_forward(self.model, batch)
                ids, logps, actual = packed.rows(_rows, packed.labels, k, temperature)
                row = 0
                for _, resp in chunk:
                    sl = slice(row, row + len(resp))
                    out.append((ids[sl].cpu(), logps[sl].cpu(), actual[sl].cpu()))
                    row += len(resp)
        return out


def parse_request(body: dict, vocab: int, limits: Limits) -> tuple[list[list[int]], list[int], int, float, str]:
    """(sequences, prompt lengths, k, temperature, format) of a get_sequence_logprobs request, or RequestError."""
    if not isinstance(body, dict):
        raise RequestError(400, "the body must be a JSON object")
    seqs, plens = body.get("sequences"), body.get("prompt_lengths")
    if not isinstance(seqs, list) or not isinstance(plens, list) or len(seqs) != len(plens):
        raise RequestError(400, "sequences and prompt_lengths must be lists of the same length")
    if not seqs:
        raise RequestError(400, "no sequences")
    if len(seqs) > limits.max_sequences:
        raise RequestError(413, f"{len(seqs)} sequences; this server takes at most {limits.max_sequences} per request")
    k, temperature = body.get("top_logprobs", 100), body.get("temperature", 1.0)
    fmt = body.get("response_format", "json")
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= min(limits.max_top_logprobs, vocab):
        top = min(limits.max_top_logprobs, vocab)
        raise RequestError(400, f"top_logprobs={k!r}; it must be an integer in [1, {top}]")
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not math.isfinite(temperature) \
            or temperature <= 0:
        raise RequestError(400, f"temperature={temperature!r}; it must be a number > 0")
    if fmt not in ("json", "binary"):
        raise RequestError(400, f"response_format={fmt!r}; use json or binary")
    total = 0
    for i, (s, p) in enumerate(zip(seqs, plens)):
        if not isinstance(s, list) or not all(isinstance(t, int) and not isinstance(t, bool) for t in s):
            raise RequestError(400, f"sequence {i} must be a list of token ids")
        if any(t < 0 or t >= vocab for t in s):
            raise RequestError(400, f"sequence {i} has a token id outside the vocabulary [0, {vocab})")
        if isinstance(p, bool) or not isinstance(p, int) or not 1 <= p <= len(s):
            raise RequestError(400, f"prompt_lengths[{i}]={p!r}; it must be in [1, {len(s)}] (the first token has "
                               "no log-prob)")
        total += len(s)
    if total > limits.max_tokens:
        raise RequestError(413, f"{total} tokens; this server takes at most {limits.max_tokens} per request")
    return seqs, plens, k, float(temperature), fmt


def _b64(a: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(a).tobytes()).decode("ascii")


def format_response(scored, sequences, prompt_lengths, k: int, fmt: str) -> dict:
    lengths = [len(s) - p for s, p in zip(sequences, prompt_lengths)]
    if fmt == "json":
        lps, tids = [], []
        for (ids, logps, actual), s, p in zip(scored, sequences, prompt_lengths):
            seq_lp, seq_id = [], []
            for t in range(ids.shape[0]):
                row_ids, row_lp = ids[t].tolist(), logps[t].tolist()
                if s[p + t] not in row_ids:  # vLLM adds the actual token to its top-k
                    row_ids.append(s[p + t])
                    row_lp.append(float(actual[t]))
                seq_lp.append(row_lp)
                seq_id.append(row_ids)
            lps.append(seq_lp)
            tids.append(seq_id)
        return {"logprobs": lps, "logprob_token_ids": tids}
    B, T = len(scored), max(lengths)
    lp = np.full((B, T, k), -np.inf, dtype=np.float32)
    ti = np.zeros((B, T, k), dtype=np.int32)
    alp = np.full((B, T, 1), -np.inf, dtype=np.float32)
    aid = np.zeros((B, T, 1), dtype=np.int32)
    for b, ((ids, logps, actual), s, p) in enumerate(zip(scored, sequences, prompt_lengths)):
        n = lengths[b]
        lp[b, :n], ti[b, :n] = logps.numpy(), ids.numpy()
        alp[b, :n, 0], aid[b, :n, 0] = actual.numpy(), np.asarray(s[p:], dtype=np.int32)
    return {"logprobs_b64": _b64(lp), "token_ids_b64": _b64(ti), "actual_logprobs_b64": _b64(alp),
            "actual_token_ids_b64": _b64(aid), "shape": [B, T, k], "completion_lengths": lengths}


def make_handler(scorer: Scorer, limits: Limits, token: str | None, log=None):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "bench-teacher/1"

        def log_message(self, fmt, *args):  # one line per request, never the Authorization header
            if log:
                log(f"{self.address_string()} {fmt % args}")

        def _send(self, status: int, payload: dict) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _authorized(self) -> bool:
            if token is None:
                return True
            got = self.headers.get("Authorization", "")
            return hmac.compare_digest(got.encode(), f"Bearer {token}".encode())

        def _guard(self, fn) -> None:
            try:
                if not self._authorized():
                    raise RequestError(401, f"missing or wrong bearer token (the server reads {TOKEN_ENV})")
                fn()
            except RequestError as e:
                self._send(e.status, {"error": str(e)})
            except Exception as e:  # the server keeps serving; the reason is one line
                self._send(500, {"error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"})

        def do_GET(self):
            def get():
                if self.path.rstrip("/") == "/health":
                    self._send(200, {"status": "ok"})
                elif self.path.rstrip("/") == "/info":
                    self._send(200, {"model": scorer.name, "identity": scorer.identity, "vocab_size": scorer.vocab,
                                     "tokenizer": scorer.identity.get("tokenizer"), "limits": asdict(limits)})
                else:
                    raise RequestError(404, f"no endpoint {self.path}")
            self._guard(get)

        def do_POST(self):
            def post():
                if self.path.rstrip("/") != "/get_sequence_logprobs":
                    raise RequestError(404, f"no endpoint {self.path}")
                try:
                    n = int(self.headers.get("Content-Length", ""))
                except ValueError:
                    raise RequestError(411, "a Content-Length header is required") from None
                if n > limits.max_body_bytes:
                    raise RequestError(413, f"a {n}-byte body; this server takes at most {limits.max_body_bytes}")
                try:
                    body = json.loads(self.rfile.read(n) or b"null")
                except (json.JSONDecodeError, UnicodeDecodeError):
                    raise RequestError(400, "the body is not valid JSON") from None
                seqs, plens, k, temperature, fmt = parse_request(body, scorer.vocab, limits)
                scored = scorer.score(seqs, plens, k, temperature)
                self._send(200, format_response(scored, seqs, plens, k, fmt))
            self._guard(post)

    return Handler


def make_server(scorer: Scorer, host: str = "127.0.0.1", port: int = 8000, limits: Limits | None = None,
                log=None) -> ThreadingHTTPServer:
    """The HTTP server (not started); the bearer token comes from the environment only."""
    token = os.environ.get(TOKEN_ENV) or None
    server = ThreadingHTTPServer((host, port), make_handler(scorer, limits or Limits(), token, log))
    server.daemon_threads = True
    return server


def load_scorer(model: str, batch_size: int = 8) -> Scorer:
    """A preset name, local HF directory or hub id, loaded as the pipeline loads its models."""
    from bench.modeling.models import load_model, load_tokenizer, model_identity
    from bench.store.stages import content_key

    tok = load_tokenizer(model)
    identity = {"model": content_key(model_identity(model)), "tokenizer": tokenizer_fingerprint(tok)}
    return Scorer(load_model(model), tok, model, identity, batch_size)


def tokenizer_fingerprint(tok) -> str:
    """A content hash of a tokenizer's vocabulary (token → id), the same on both ends of the protocol."""
    import hashlib

    vocab = sorted(tok.get_vocab().items(), key=lambda kv: kv[1])
    return hashlib.sha256(json.dumps(vocab, ensure_ascii=False).encode()).hexdigest()[:16]


def serve_command(model: str, host: str, port: int, batch_size: int, limits: Limits, echo=print) -> None:
    """`bench serve-teacher`: load, listen, serve until interrupted (Ctrl-C stops it cleanly)."""
    from bench.errors import BenchError

    if host not in ("127.0.0.1", "localhost", "::1"):
        echo(f"note: listening on {host}: every host that reaches it can query the model"
             + ("" if os.environ.get(TOKEN_ENV) else f"; set {TOKEN_ENV} to require a bearer token"))
    scorer = load_scorer(model, batch_size)
    try:
        server = make_server(scorer, host, port, limits, log=None)
    except OSError as e:
        raise BenchError(f"cannot listen on {host}:{port} ({e.strerror or e}); pick another --port") from None
    echo(f"serving {model} (vocabulary {scorer.vocab}) on http://{server.server_address[0]}:{server.server_address[1]}"
         f" — POST /get_sequence_logprobs/ (TRL's protocol), GET /health/, /info/"
         + (f"; bearer token required ({TOKEN_ENV})" if os.environ.get(TOKEN_ENV) else ""))
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        echo("stopped")
    finally:
        server.server_close()

"""Teacher signals from a server speaking TRL's `get_sequence_logprobs` protocol (`trl vllm-serve`, or
`bench serve-teacher`, bench/signals/serve.py): the top-k and log-prob entries of the cache filled from a remote
teacher (`--set teacher.server=URL`).

Requests go in batches (`batch_size` sequences), binary format, through a `requests` session whose adapter retries
connection errors and 502/503/504 answers with exponential backoff (urllib3's Retry); every request has a timeout.
A server that cannot be reached, or answers 4xx, stops the run with one `error:` line. Before any signal is asked
for, the server's vocabulary is checked against the tokenizer the entries index: by /info/ (its vocabulary size and
tokenizer fingerprint) where the server has it, otherwise by a probe (the actual token ids must come back, k wide).
Value signals (TVKD) need the teacher's raw logits, which the protocol does not return.
"""
from __future__ import annotations

import base64
import os

import numpy as np
import torch

from bench.errors import BenchError
from bench.progress import progress_bar
from bench.signals.compute import round_down_half
from bench.signals.serve import TOKEN_ENV, tokenizer_fingerprint

NO_VALUES = ("a teacher server returns top-k and token log-probs only (TRL's get_sequence_logprobs), not the raw "
             "logits that value signals (TVKD) need; run that teacher locally (drop teacher.server)")


class TeacherClient:
    def __init__(self, url: str, timeout: float = 120.0, retries: int = 4, backoff: float = 1.0,
                 batch_size: int = 16):
        import requests
        from requests.adapters import HTTPAdapter
        from urllib3.util.retry import Retry

        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise BenchError(f"teacher.server={url!r} is not an http(s) URL; e.g. http://127.0.0.1:8000")
        self.url, self.timeout, self.batch_size, self.retries = url.rstrip("/"), timeout, batch_size, retries
        self.session = requests.Session()
        retry = Retry(total=retries, connect=retries, read=retries, status=retries, backoff_factor=backoff,
                      status_forcelist=(502, 503, 504), allowed_methods=("GET", "POST"), raise_on_status=False)
        self.session.mount("http://", HTTPAdapter(max_retries=retry))
        self.session.mount("https://", HTTPAdapter(max_retries=retry))
        token = os.environ.get(TOKEN_ENV)
        if token:  # from the environment only; never logged or stored
            self.session.headers["Authorization"] = f"Bearer {token}"

    def _call(self, method: str, path: str, **kw):
        import requests

        try:
            r = self.session.request(method, f"{self.url}{path}", timeout=self.timeout, **kw)
        except requests.RequestException as e:
            raise BenchError(f"teacher server {self.url} unreachable after {self.retries + 1} tries "
                             f"({type(e).__name__}); start it (`bench serve-teacher MODEL --port PORT`) or fix "
                             "teacher.server") from None
        return r

    def _json(self, r, what: str) -> dict:
        if r.status_code != 200:
            try:
                reason = r.json().get("error") or r.text
            except ValueError:
                reason = r.text
            hint = f" (set {TOKEN_ENV})" if r.status_code == 401 else ""
            raise BenchError(f"teacher server {self.url} refused {what}: HTTP {r.status_code}: "
                             f"{str(reason).strip().splitlines()[0] if str(reason).strip() else ''}{hint}")
        return r.json()

    def info(self) -> dict | None:
        """/info/ of a bench server; None for a server without it (trl vllm-serve)."""
        r = self._call("GET", "/info/")
        return None if r.status_code == 404 else self._json(r, "/info/")

    def check(self, tokenizer, k: int, probe: list[int]) -> dict:
        """The server serves a model of `tokenizer`'s vocabulary and answers k wide; its identity (for cache keys)."""
        self._json(self._call("GET", "/health/"), "/health/")
        info = self.info()
        vocab = len(tokenizer)
        if info is not None:
            if info.get("vocab_size", vocab) < vocab or info.get("tokenizer") != tokenizer_fingerprint(tokenizer):
                raise BenchError(f"teacher server {self.url} serves '{info.get('model')}' whose tokenizer differs from "
                                 f"the student's ({info.get('vocab_size')} vs {vocab} tokens, or another vocabulary); "
                                 "serve a teacher of the student's tokenizer")
            if k > info.get("limits", {}).get("max_top_logprobs", k):
                raise BenchError(f"teacher server {self.url} gives at most {info['limits']['max_top_logprobs']} "
                                 f"log-probs per token; the run asks k={k} (lower k or raise the server's limit)")
            return {"server_model": info.get("identity", {}).get("model") or info.get("model"),
                    "tokenizer": info.get("tokenizer")}
        (ids, _, actual_ids, _), = self._score([probe], [1], k)
        if ids.shape[1] != k or actual_ids.tolist() != probe[1:] or int(ids.max()) >= vocab:
            raise BenchError(f"teacher server {self.url} answered a probe with other tokens or another k; it does not "
                             "serve a model of the student's vocabulary")
        return {"server_url": self.url, "tokenizer": tokenizer_fingerprint(tokenizer)}

    def _score(self, sequences, prompt_lengths, k: int, temperature: float = 1.0):
        body = {"sequences": sequences, "prompt_lengths": prompt_lengths, "top_logprobs": k,
                "temperature": temperature, "response_format": "binary"}
        out = self._json(self._call("POST", "/get_sequence_logprobs/", json=body), "a get_sequence_logprobs request")
        shape = out["shape"]
        arr = {name: np.frombuffer(base64.b64decode(out[f"{name}_b64"]), dtype=dt).reshape(
            shape[:2] + ([1] if name.startswith("actual") else [shape[2]]))
            for name, dt in (("logprobs", np.float32), ("token_ids", np.int32), ("actual_logprobs", np.float32),
                             ("actual_token_ids", np.int32))}
        res = []
        for b, n in enumerate(out["completion_lengths"]):
            res.append(tuple(torch.from_numpy(arr[name][b, :n, 0].copy() if name.startswith("actual")
                                              else arr[name][b, :n].copy())
                             for name in ("token_ids", "logprobs", "actual_token_ids", "actual_logprobs")))
        return res  # per sequence: (top-k ids [T, k], top-k log-probs [T, k], actual ids [T], actual log-probs [T])

    def fill(self, pairs: list[tuple[list[int], list[int]]], writers: dict, *, k: int, desc: str) -> dict:
        """The `topk` and `logps` kinds of a signal entry for (prompt, response) pairs, in order, as the local pass
        writes them (top-k log-probs rounded toward −inf to float16)."""
        tokens = sent = 0
        with progress_bar(desc, total=len(pairs), unit="seq") as bar:
            for start in range(0, len(pairs), self.batch_size):
                chunk = pairs[start:start + self.batch_size]
                scored = self._score([p + r for p, r in chunk], [len(p) for p, _ in chunk], k)
                sent += 1
                for (prompt, resp), (ids, logps, actual_ids, actual) in zip(chunk, scored):
                    if ids.shape[0] != len(resp) or actual_ids.tolist() != list(resp):
                        raise BenchError(f"teacher server {self.url} returned rows that do not match the sequences "
                                         "sent; check that it serves the student's tokenizer")
                    writers["topk"].add(topk_ids=ids.to(torch.int32), topk_logps=round_down_half(logps.double()))
                    writers["logps"].add(logps=actual.float())
                    tokens += len(prompt) + len(resp)
                bar.advance(len(chunk), tokens=sum(len(p) + len(r) for p, r in chunk))
        return {"tokens": tokens, "requests": sent}

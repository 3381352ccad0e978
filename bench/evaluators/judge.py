"""Shared LLM-judge client: any OpenAI-compatible ``base_url`` through the ``openai>=1`` client.

What it adds over a bare client:

* **Bounded retries with jittered exponential backoff** for transport failures (connection refused, timeouts, HTTP
  408/409/429/5xx) and malformed answers (a body that is not JSON or not a chat completion, as proxies and
  overloaded servers send): ``judge_max_retries`` retries after the first attempt, sleeping a random time in
  ``[d/2, d]`` with ``d = judge_backoff * 2**i`` capped at ``judge_max_backoff`` (the jitter keeps parallel workers
  from retrying in lockstep). Then one :class:`~bench.errors.BenchError` naming the fix. Other HTTP errors (400,
  401, 404: a wrong model name or key) fail at once. Nothing printed ever carries a credential: error bodies are
  scrubbed of the key, bearer tokens, ``sk-...`` strings and ``key=value`` secrets (:func:`scrub`).
* **Malformed-output policy**: a judgment whose text the caller's parser rejects is asked again, up to
  ``judge_parse_retries`` more times; if it still does not parse it is recorded as ``parsed: null`` with the raw text.
  Callers exclude such judgments from means and report how many there were.
* **On-disk judgment cache** under ``<cache_dir>/judgments/``: one JSONL file per judge model, one line per finished
  judgment, appended and fsync'ed as soon as it is done (a crash loses at most the judgment in flight; a torn last line
  is ignored on load). The key is a hash of (judge model, messages, decoding parameters, protocol tag): it does not
  depend on ``base_url``, so the same judge behind another server reuses the judgments. Unparsed judgments are cached
  too: a rerun reuses them, unless ``judge_retry_unparsed`` is true. A rerun after a failure resumes where it
  stopped.
* **The API key** is read from the environment variable named by ``judge_api_key_env`` (default ``OPENAI_API_KEY``)
  and is never written to a log, a cache, an error message or metrics. A local server (vLLM, ``transformers serve``)
  gets the placeholder key ``EMPTY`` when the variable is unset.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import re
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bench.errors import BenchError
from bench.evaluators.redact import safe_url, scrub  # noqa: F401 - re-exported for callers
from bench.textout import slug

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_KEY_ENV = "OPENAI_API_KEY"
_RETRY_STATUS = {408, 409, 429}
CACHE_FORMAT = 1


class MalformedResponse(Exception):
    """The server answered 200 with a body that is not a chat completion (HTML from a proxy, truncated JSON...)."""


def _as_float(settings: dict, key: str, default: float) -> float:
    value = settings.get(key, default)
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise BenchError(f"setting {key}={value!r} is not a number; pass e.g. {key}={default}") from None
    if value < 0:
        raise BenchError(f"setting {key}={value!r} must be >= 0")
    return value


def _as_int(settings: dict, key: str, default: int, minimum: int = 0) -> int:
    value = settings.get(key, default)
    if isinstance(value, bool):
        raise BenchError(f"setting {key}={value!r} is not an integer; pass e.g. {key}={default}")
    try:
        ivalue = int(value)
    except (TypeError, ValueError):
        raise BenchError(f"setting {key}={value!r} is not an integer; pass e.g. {key}={default}") from None
    if ivalue < minimum or ivalue != float(value):
        raise BenchError(f"setting {key}={value!r} must be an integer >= {minimum}")
    return ivalue


@dataclass
class JudgeConfig:
    """Where the judge is and how patiently to talk to it (from the ``judge_*`` settings)."""

    model: str
    base_url: str = DEFAULT_BASE_URL
    api_key_env: str = DEFAULT_KEY_ENV
    timeout: float = 120.0
    max_retries: int = 4
    backoff: float = 1.0
    max_backoff: float = 30.0
    parse_retries: int = 2
    workers: int = 4
    max_tokens: int = 2048
    temperature: float = 0.0
    retry_unparsed: bool = False

    @classmethod
    def from_settings(cls, settings: dict, *, default_model: str, model_key: str | None = None,
                      default_max_tokens: int = 2048) -> JudgeConfig:
        """``model_key`` (e.g. ``mtbench_judge_model``) overrides ``judge_model``, which overrides the default."""
        model = (settings.get(model_key) if model_key else None) or settings.get("judge_model") or default_model
        base_url = str(settings.get("judge_base_url") or DEFAULT_BASE_URL).rstrip("/")
        if not re.match(r"^https?://", base_url):
            raise BenchError(f"judge_base_url={safe_url(base_url)!r} is not an http(s) URL; pass e.g. "
                             "http://127.0.0.1:8000/v1 (vLLM) or https://api.openai.com/v1")
        return cls(
            model=str(model),
            base_url=base_url,
            api_key_env=str(settings.get("judge_api_key_env") or DEFAULT_KEY_ENV),
            timeout=_as_float(settings, "judge_timeout", 120.0),
            max_retries=_as_int(settings, "judge_max_retries", 4),
            backoff=_as_float(settings, "judge_backoff", 1.0),
            max_backoff=_as_float(settings, "judge_max_backoff", 30.0),
            parse_retries=_as_int(settings, "judge_parse_retries", 2),
            workers=_as_int(settings, "judge_workers", 4, minimum=1),
            max_tokens=_as_int(settings, "judge_max_tokens", default_max_tokens, minimum=1),
            temperature=_as_float(settings, "judge_temperature", 0.0),
            retry_unparsed=bool(settings.get("judge_retry_unparsed", False)),
        )

    def api_key(self) -> str:
        key = os.environ.get(self.api_key_env)
        if key:
            return key
        host = urlsplit(self.base_url).hostname or ""
        if host.endswith("openai.com"):
            raise BenchError(f"the judge at {safe_url(self.base_url)} needs an API key: export {self.api_key_env}=... "
                             "(or set judge_api_key_env to the variable that holds it)")
        return "EMPTY"  # local OpenAI-compatible servers accept any key

    def describe(self) -> dict:
        """JSON-able, secret-free description (for metrics)."""
        return {"model": self.model, "base_url": safe_url(self.base_url), "api_key_env": self.api_key_env,
                "max_tokens": self.max_tokens, "temperature": self.temperature}


class JudgmentCache:
    """Append-only JSONL cache of finished judgments for one judge model (thread-safe)."""

    def __init__(self, cache_dir: str | Path, model: str):
        self.path = Path(cache_dir) / "judgments" / f"{slug(model)}.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._rows: dict[str, dict] = {}
        if self.path.exists():
            with open(self.path, encoding="utf-8") as f:
                for line in f:
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError:
                        continue  # a torn last line from a crash
                    if isinstance(row, dict) and "key" in row:
                        self._rows[row["key"]] = row

    def get(self, key: str) -> dict | None:
        with self._lock:
            return self._rows.get(key)

    def put(self, row: dict) -> None:
        line = json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n"
        with self._lock:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(line)
                f.flush()
                os.fsync(f.fileno())
            self._rows[row["key"]] = row

    def __len__(self) -> int:
        return len(self._rows)


@dataclass
class JudgeRequest:
    messages: list[dict]
    tag: str = ""  # protocol name (e.g. "mtbench/single-v1"): part of the cache key
    meta: dict = field(default_factory=dict)  # returned untouched


def request_key(model: str, messages: Sequence[dict], params: dict, tag: str) -> str:
    blob = json.dumps({"format": CACHE_FORMAT, "model": model, "messages": list(messages), "params": params,
                       "tag": tag}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


class EnvKeyOpenAI:
    """``openai.OpenAI`` whose key comes from an environment variable named in its config (``api_key_env``).

    alpaca_eval builds its clients from a client-config YAML (``client_class`` + constructor kwargs); pointing it at
    this class keeps the secret out of that file.
    """

    def __new__(cls, *, api_key_env: str = DEFAULT_KEY_ENV, base_url: str | None = None, **kwargs):
        import openai

        cfg = JudgeConfig(model="-", base_url=(base_url or DEFAULT_BASE_URL), api_key_env=api_key_env)
        return openai.OpenAI(api_key=cfg.api_key(), base_url=base_url, **kwargs)


def translate_openai_error(err: BaseException, cfg: JudgeConfig, attempts: int) -> BenchError | None:
    """One-line BenchError for an openai transport/HTTP error or a malformed answer (None if ``err`` is neither)."""
    import openai

    url = safe_url(cfg.base_url)
    tail = "finished judgments are cached, so a rerun resumes"
    if _malformed(err):
        return BenchError(f"judge at {url} answered with a malformed body (not a JSON chat completion) on {attempts} "
                          f"attempt(s); check that judge_base_url points at an OpenAI-compatible /v1 endpoint and "
                          f"that no proxy rewrites its answers ({tail})")
    if isinstance(err, openai.APITimeoutError):
        return BenchError(f"judge at {url} timed out after {attempts} attempt(s) of {cfg.timeout:g}s each; "
                          f"raise judge_timeout or use a faster judge ({tail})")
    if isinstance(err, openai.APIConnectionError):
        return BenchError(f"judge endpoint {url} unreachable after {attempts} attempt(s) "
                          f"({type(err.__cause__ or err).__name__}); start the judge server or fix judge_base_url "
                          f"({tail})")
    if isinstance(err, openai.APIStatusError):
        code = err.status_code
        if code >= 500 or code in _RETRY_STATUS:
            return BenchError(f"judge at {url} answered HTTP {code} on {attempts} attempt(s); check the judge "
                              f"server (its log, load, quota), then rerun ({tail})")
        detail = _short_detail(err, cfg)
        return BenchError(f"judge at {url} rejected the request with HTTP {code}{detail}; check that judge_model "
                          f"'{cfg.model}' is served there and that ${cfg.api_key_env} holds a valid key")
    if isinstance(err, openai.OpenAIError):
        return BenchError(f"judge at {url} failed: {type(err).__name__}; check judge_base_url and judge_model")
    return None


def _short_detail(err, cfg: JudgeConfig | None = None) -> str:
    try:
        body = err.response.text
    except Exception:  # noqa: BLE001 - best effort only
        return ""
    key = os.environ.get(cfg.api_key_env, "") if cfg is not None else ""
    body = scrub(" ".join(str(body).split()), key)[:160]
    return f" ({body})" if body else ""


def _malformed(err: BaseException) -> bool:
    import openai

    return isinstance(err, (MalformedResponse, json.JSONDecodeError, openai.APIResponseValidationError))


def _retryable(err: BaseException) -> bool:
    import openai

    if _malformed(err):
        return True
    if isinstance(err, openai.APIConnectionError):  # includes APITimeoutError
        return True
    if isinstance(err, openai.APIStatusError):
        return err.status_code >= 500 or err.status_code in _RETRY_STATUS
    return False


def backoff_delay(cfg: JudgeConfig, attempt: int) -> float:
    """Seconds to wait before retry `attempt` (1-based): uniform in [d/2, d], d = backoff·2^(attempt−1) capped."""
    d = min(cfg.max_backoff, cfg.backoff * (2 ** (attempt - 1)))
    return random.uniform(d / 2, d)


class JudgeClient:
    """Chat-completion judge with retries, a parse policy and the on-disk cache (see the module docstring)."""

    def __init__(self, cfg: JudgeConfig, cache_dir: str | Path, *, sleep: Callable[[float], None] = time.sleep):
        import openai

        self.cfg = cfg
        self.cache = JudgmentCache(cache_dir, cfg.model)
        self._sleep = sleep
        self._client = openai.OpenAI(base_url=cfg.base_url, api_key=cfg.api_key(), timeout=cfg.timeout,
                                     max_retries=0)
        self.calls = 0  # HTTP requests sent (for reports and tests)
        self._calls_lock = threading.Lock()

    # -- one HTTP exchange, with transport retries ------------------------------------------------------------
    def complete(self, messages: Sequence[dict], *, max_tokens: int | None = None,
                 temperature: float | None = None) -> str:
        attempts = 0
        while True:
            attempts += 1
            with self._calls_lock:
                self.calls += 1
            try:
                resp = self._client.chat.completions.create(
                    model=self.cfg.model, messages=list(messages),
                    max_tokens=max_tokens or self.cfg.max_tokens,
                    temperature=self.cfg.temperature if temperature is None else temperature,
                )
                choices = getattr(resp, "choices", None)
                if not isinstance(choices, list) or not choices or not hasattr(choices[0], "message"):
                    raise MalformedResponse(type(resp).__name__)
            except Exception as err:  # noqa: BLE001 - classified below
                if _retryable(err) and attempts <= self.cfg.max_retries:
                    delay = backoff_delay(self.cfg, attempts)
                    log.warning("judge %s: %s (attempt %d/%d); retrying in %.1fs", safe_url(self.cfg.base_url),
                                type(err).__name__, attempts, self.cfg.max_retries + 1, delay)
                    self._sleep(delay)
                    continue
                bench_err = translate_openai_error(err, self.cfg, attempts)
                if bench_err is not None:
                    raise bench_err from None
                raise
            text = getattr(choices[0].message, "content", None)
            return text if isinstance(text, str) else ""

    # -- one judgment: cache, parse policy ----------------------------------------------------------------------
    def _usable(self, hit: dict | None) -> dict | None:
        if hit is not None and hit.get("parsed") is None and self.cfg.retry_unparsed:
            return None
        return hit

    def judge(self, request: JudgeRequest, parse: Callable[[str], Any]) -> dict:
        params = {"max_tokens": self.cfg.max_tokens, "temperature": self.cfg.temperature}
        key = request_key(self.cfg.model, request.messages, params, request.tag)
        hit = self._usable(self.cache.get(key))
        if hit is not None:
            return {**hit, "cached": True, "meta": request.meta}
        raws = []
        parsed = None
        for _ in range(self.cfg.parse_retries + 1):
            raw = self.complete(request.messages)
            raws.append(raw)
            parsed = parse(raw)
            if parsed is not None:
                break
        row = {"key": key, "model": self.cfg.model, "tag": request.tag, "parsed": parsed, "raw": raws[-1],
               "attempts": len(raws), "tstamp": time.time()}
        if parsed is None and len(raws) > 1:
            row["raw_attempts"] = raws
        self.cache.put(row)
        return {**row, "cached": False, "meta": request.meta}

    def judge_many(self, requests: Sequence[JudgeRequest], parse: Callable[[str], Any],
                   progress: Callable[[int], None] | None = None) -> list[dict]:
        """Judge all requests (``judge_workers`` at a time). On the first failure, finishes what is in flight
        (so it is cached), cancels the rest and raises that failure."""
        results: list[dict | None] = [None] * len(requests)
        todo = []
        for i, req in enumerate(requests):  # cache hits first, without threads
            params = {"max_tokens": self.cfg.max_tokens, "temperature": self.cfg.temperature}
            hit = self._usable(self.cache.get(request_key(self.cfg.model, req.messages, params, req.tag)))
            if hit is not None:
                results[i] = {**hit, "cached": True, "meta": req.meta}
                if progress:
                    progress(1)
            else:
                todo.append(i)
        if todo:
            with ThreadPoolExecutor(max_workers=min(self.cfg.workers, len(todo))) as pool:
                futures = {pool.submit(self.judge, requests[i], parse): i for i in todo}
                pending = set(futures)
                error: BaseException | None = None
                while pending:
                    done, pending = wait(pending, return_when=FIRST_EXCEPTION)
                    for fut in done:
                        exc = fut.exception()
                        if exc is not None:
                            error = error or exc
                        else:
                            results[futures[fut]] = fut.result()
                            if progress:
                                progress(1)
                    if error is not None:
                        for fut in pending:
                            fut.cancel()
                        wait(pending)  # let in-flight judgments finish (and be cached)
                        for fut in pending:
                            if not fut.cancelled() and fut.exception() is None:
                                results[futures[fut]] = fut.result()
                        raise error
        return [r for r in results if r is not None]

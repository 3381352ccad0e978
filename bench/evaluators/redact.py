"""Keeping credentials out of everything the harness prints or stores: URLs without user:password, and text
scrubbed of API keys, bearer tokens, `sk-...` strings and `key=value` secrets."""
from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit


def safe_url(url: str) -> str:
    """``url`` without any user:password part (safe to print)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<invalid url>"
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


_SECRET_PATTERNS = (
    re.compile(r"(?i)bearer\s+[^\s\"',}]+"),
    re.compile(r"\bsk-[A-Za-z0-9_\-]{6,}"),
    re.compile(r"(?i)((?:api[_-]?key|access[_-]?token|token|secret|password|authorization)[\"']?\s*[:=]\s*[\"']?)"
               r"[^\s\"',}&]+"),
    re.compile(r"(?i)(https?://)[^/\s:@]+:[^/\s@]+@"),
)


def scrub(text: str, *secrets: str) -> str:
    """`text` with credentials replaced by `***`: the given secret values, bearer tokens, `sk-...` keys,
    `key=value`/`"key": "value"` pairs whose name says key/token/secret/password, and URL user:password parts."""
    out = str(text)
    for secret in secrets:
        if secret and len(secret) >= 4:
            out = out.replace(secret, "***")
    out = _SECRET_PATTERNS[0].sub("Bearer ***", out)
    out = _SECRET_PATTERNS[1].sub("sk-***", out)
    out = _SECRET_PATTERNS[2].sub(lambda m: m.group(1) + "***", out)
    return _SECRET_PATTERNS[3].sub(lambda m: m.group(1) + "***@", out)

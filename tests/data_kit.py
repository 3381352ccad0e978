"""Shared helpers of the dataset tests (tests/data/test_adapters.py, tests/data/test_local.py): message builders,
a JSONL writer and a check that an error is one BenchError line."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.errors import BenchError

FIX = Path(__file__).parent / "fixtures" / "data"


def U(c):
    return {"role": "user", "content": c}


def A(c):
    return {"role": "assistant", "content": c}


def S(c):
    return {"role": "system", "content": c}


def write_jsonl(path: Path, rows, raw_lines=None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(r) for r in rows] if raw_lines is None else raw_lines
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def error_of(fn, *args, **kwargs) -> str:
    with pytest.raises(BenchError) as info:
        fn(*args, **kwargs)
    msg = str(info.value)
    assert "\n" not in msg, f"error message must be one line: {msg!r}"
    return msg

"""Row-level validation and canonical row builders shared by the dataset adapters (one-line BenchErrors)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from bench.errors import BenchError

ROLES = ("system", "user", "assistant")
VAL_FRACTION = 0.05
MAX_INVALID_FRACTION = 0.10  # lenient (hub) mode: above this, fail instead of skipping
LOCAL_EXTENSIONS = (".jsonl", ".json", ".parquet")
# ids of local rows without an "id" field are derived from their content after conversion (see content_ids);
# until then they carry this prefix, which no user id can start with
GENERATED_ID = "\x00row"
# directory layout for local datasets: role -> accepted file stems, first match wins
LOCAL_DIR_FILES = {
    "train": ("train",),
    "val": ("val", "validation"),
    "test": ("test",),
    "sft": ("sft",),
}


# ----------------------------------------------------------------------------------------------------------
# row-level errors and sources
# ----------------------------------------------------------------------------------------------------------


class RowError(Exception):
    """A problem with one raw row; the loader adds where it is and turns it into a BenchError."""

    def __init__(self, problem: str, fix: str, index: int | None = None, row_id: str | None = None):
        super().__init__(problem)
        self.problem = problem
        self.fix = fix
        self.index = index
        self.row_id = row_id


def _one_line(text: str, limit: int = 400) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _short(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 4] + "...'"


@dataclass
class Source:
    """Where raw rows came from, for error messages."""

    label: str  # e.g. "tests/x.jsonl" or "dataset 'dpo-mix-7k' (argilla/dpo-mix-7k, split 'train')"
    path: Path | None = None  # a local file, to turn row indexes into line numbers

    def where(self, index: int | None, row_id: str | None = None) -> str:
        loc = self.label
        if index is not None:
            line = self._line_of(index)
            loc += f" line {line}" if line is not None else f" row {index}"
        if row_id is not None:
            loc += f" (id {_short(row_id)})"
        return loc

    def error(self, err: RowError) -> BenchError:
        return BenchError(_one_line(f"{self.where(err.index, err.row_id)}: {err.problem}; {err.fix}", 600))

    def _line_of(self, index: int) -> int | None:
        """1-based line of the index-th row of a JSONL file (blank lines are skipped by the reader)."""
        if self.path is None or self.path.suffix != ".jsonl":
            return None
        try:
            with open(self.path, encoding="utf-8") as f:
                seen = -1
                for lineno, line in enumerate(f, 1):
                    if line.strip():
                        seen += 1
                        if seen == index:
                            return lineno
        except OSError:
            return None
        return None


# ----------------------------------------------------------------------------------------------------------
# field helpers (raise RowError)
# ----------------------------------------------------------------------------------------------------------


def _missing(row: Mapping, key: str) -> bool:
    # Arrow fills keys absent from a row with None, so None means "missing".
    return row.get(key) is None


def _require(row: Mapping, key: str, fix: str | None = None) -> Any:
    if _missing(row, key):
        keys = ", ".join(sorted(k for k, v in row.items() if v is not None)) or "none"
        raise RowError(f"missing field '{key}' (row has: {keys})", fix or f"add a '{key}' field to every row")
    return row[key]


def _a(role: str) -> str:
    return ("an " if role == "assistant" else "a ") + role


def _typename(value: Any) -> str:
    return type(value).__name__


def _text(value: Any, field_name: str, *, nonempty: bool = True) -> str:
    if not isinstance(value, str):
        raise RowError(f"field '{field_name}' must be a string, got {_typename(value)}",
                       f"store '{field_name}' as a JSON string")
    if nonempty and not value.strip():
        raise RowError(f"field '{field_name}' is empty", f"give '{field_name}' non-empty text or remove the row")
    return value


def _clean(value: Any) -> Any:
    """Drop None-valued dict keys, recursively (Arrow adds them when rows have different nested keys)."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def _meta(row: Mapping) -> dict:
    meta = row.get("meta")
    if meta is None:
        return {}
    if not isinstance(meta, dict):
        raise RowError(f"field 'meta' must be an object, got {_typename(meta)}", "make 'meta' a JSON object or drop it")
    return _clean(meta)


def _row_id(row: Mapping, index: int, id_prefix: str) -> str:
    rid = row.get("id")
    if rid is None:
        return f"{id_prefix}-{index:06d}"
    if isinstance(rid, bool) or not isinstance(rid, (str, int)):
        raise RowError(f"field 'id' must be a string or an integer, got {_typename(rid)}",
                       "use a string id, or drop 'id' to get generated ids")
    rid = str(rid)
    if not rid.strip():
        raise RowError("field 'id' is empty", "use a non-empty id, or drop 'id' to get generated ids")
    return rid


def content_ids(rows: list[dict]) -> list[dict]:
    """Give every row whose id was generated an id derived from its content (prompt, replies), so renaming,
    moving or re-encoding a file (JSONL, JSON, Parquet, standard or conversational) keeps the ids, the
    validation split and every cache key. Identical rows get `-2`, `-3`, ... in file order."""
    import hashlib
    import json

    seen: dict[str, int] = {}
    out = []
    for row in rows:
        if str(row["id"]).startswith(GENERATED_ID):
            body = {k: row[k] for k in ("prompt", "chosen", "rejected", "response") if k in row}
            base = hashlib.sha256(json.dumps(body, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:16]
            seen[base] = seen.get(base, 0) + 1
            row = {**row, "id": base if seen[base] == 1 else f"{base}-{seen[base]}"}
        out.append(row)
    return out


def split_implicit_prompt(chosen: str, rejected: str) -> tuple[str, str, str]:
    """TRL's standard *implicit prompt* format: the prompt is the text `chosen` and `rejected` share at the start
    (cut before a separating space, as TRL's `extract_prompt` does). Returns (prompt, chosen, rejected)."""
    n = 0
    for a, b in zip(chosen, rejected):
        if a != b:
            break
        n += 1
    if n and chosen[n - 1] == " " and n < min(len(chosen), len(rejected)):
        n -= 1
    prompt = chosen[:n]
    if not prompt.strip():
        raise RowError("'chosen' and 'rejected' share no leading prompt text and there is no 'prompt' field",
                       "add a 'prompt' field, or write both replies after the same prompt text")
    return prompt, chosen[n:], rejected[n:]


def _messages(value: Any, field_name: str, role_map: Mapping[str, str] | None = None,
              role_key: str = "role", content_key: str = "content") -> list[dict]:
    """Validate a message list and normalise it to [{"role", "content"}]."""
    if not isinstance(value, list):
        raise RowError(f"field '{field_name}' must be a list of messages, got {_typename(value)}",
                       f"make '{field_name}' a list of {{\"{role_key}\": ..., \"{content_key}\": ...}} objects")
    out = []
    for j, msg in enumerate(value):
        if not isinstance(msg, dict):
            raise RowError(f"'{field_name}' message {j} must be an object, got {_typename(msg)}",
                           f"use {{\"{role_key}\": ..., \"{content_key}\": ...}} objects")
        role = msg.get(role_key)
        content = msg.get(content_key)
        if role is None or content is None:
            missing = role_key if role is None else content_key
            raise RowError(f"'{field_name}' message {j} is missing '{missing}'",
                           f"give every message a '{role_key}' and a '{content_key}'")
        if role_map is not None:
            mapped = role_map.get(role) if isinstance(role, str) else None
            allowed = ", ".join(role_map)
        else:
            mapped = role if role in ROLES else None
            allowed = ", ".join(ROLES)
        if mapped is None:
            raise RowError(f"'{field_name}' message {j} has unknown {role_key} {_short(role)}",
                           f"use one of: {allowed}")
        if not isinstance(content, str):
            raise RowError(f"'{field_name}' message {j} {content_key} must be a string, got {_typename(content)}",
                           f"store each message {content_key} as a JSON string")
        out.append({"role": mapped, "content": content})
    return out


def _check_prompt(prompt: list[dict], field_name: str = "prompt") -> list[dict]:
    if not prompt:
        raise RowError(f"'{field_name}' has no messages", "give at least one user turn before the reply")
    last = prompt[-1]
    if last["role"] != "user":
        raise RowError(f"'{field_name}' ends with {_a(last['role'])} turn, not a user turn",
                       "the prompt must end with the user message the reply answers")
    if not last["content"].strip():
        raise RowError(f"the final user turn of '{field_name}' is empty", "give the final user turn some text")
    return prompt


def _prompt(value: Any, field_name: str = "prompt") -> list[dict]:
    """A prompt given as a string (one user turn) or as a message list."""
    if isinstance(value, str):
        if not value.strip():
            raise RowError(f"field '{field_name}' is empty", f"give '{field_name}' non-empty text or remove the row")
        return [{"role": "user", "content": value}]
    if isinstance(value, list):
        return _check_prompt(_messages(value, field_name), field_name)
    raise RowError(f"field '{field_name}' must be a string or a list of messages, got {_typename(value)}",
                   f"store '{field_name}' as a string or as [{{\"role\": \"user\", \"content\": ...}}]")


def _split_final_assistant(msgs: list[dict], field_name: str) -> tuple[list[dict], str]:
    if not msgs:
        raise RowError(f"field '{field_name}' has no messages", f"end '{field_name}' with an assistant turn")
    if msgs[-1]["role"] != "assistant":
        raise RowError(f"'{field_name}' ends with {_a(msgs[-1]['role'])} turn, not an assistant turn",
                       f"end '{field_name}' with the assistant reply")
    return msgs[:-1], msgs[-1]["content"]


def _check_pair(chosen: str, rejected: str) -> None:
    if not chosen.strip():
        raise RowError("chosen reply is empty", "give 'chosen' non-empty text or remove the row")
    if not rejected.strip():
        raise RowError("rejected reply is empty", "give 'rejected' non-empty text or remove the row")
    if chosen == rejected:
        raise RowError("chosen and rejected replies are identical", "a preference pair needs two different replies; "
                       "remove the row or fix one side")


def pref_row(rid: str, prompt: list[dict], chosen: str, rejected: str, meta: dict | None = None) -> dict:
    _check_pair(chosen, rejected)
    return {"id": rid, "prompt": prompt, "chosen": chosen, "rejected": rejected, "meta": meta or {}}


def sft_row(rid: str, prompt: list[dict], response: str, meta: dict | None = None) -> dict:
    if not response.strip():
        raise RowError("response is empty", "give the reply non-empty text or remove the row")
    return {"id": rid, "prompt": prompt, "response": response, "meta": meta or {}}


def test_row_from(row: dict, family: str) -> dict:
    """A test-prompt row from a preference/SFT row: same id and prompt, reference reply in meta."""
    meta = dict(row.get("meta") or {})
    meta.setdefault("family", family)
    ref = row.get("chosen", row.get("response"))
    if ref is not None:
        meta["reference"] = ref
    return {"id": row["id"], "prompt": row["prompt"], "meta": meta}

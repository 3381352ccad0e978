"""The project's own local row formats (preference, SFT and prompt-only rows; standard or conversational, explicit
or implicit prompt) -> canonical rows: which kind a row is, and the strict converter of a local file's rows."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from bench.data.converters import Converted, _dpo_mix_row, _sharegpt_row, _with_id, convert_helpsteer2
from bench.data.rows import (RowError, _check_prompt, _messages, _meta, _missing, _prompt, _require, _row_id, _short,
                             _split_final_assistant, _text, _typename, pref_row, sft_row, split_implicit_prompt)

# ----------------------------------------------------------------------------------------------------------
# local formats
# ----------------------------------------------------------------------------------------------------------


def _reply(value: Any, field_name: str, prompt: list[dict]) -> str:
    """A chosen/rejected reply given as a string or as a message list ending in the assistant reply."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        prefix, reply = _split_final_assistant(_messages(value, field_name), field_name)
        if prefix and prefix != prompt:
            raise RowError(f"the turns before the final reply in '{field_name}' differ from 'prompt'",
                           f"make '{field_name}' just [{{\"role\": \"assistant\", ...}}] or repeat the prompt exactly")
        return reply
    raise RowError(f"field '{field_name}' must be a string or a list of messages, got {_typename(value)}",
                   f"store '{field_name}' as the reply text")


def local_row_kind(row: Mapping) -> str:
    """"pref", "sft", "test" or "unknown", from which fields a local row has."""
    if not _missing(row, "chosen") or not _missing(row, "rejected"):
        return "pref"
    if not _missing(row, "response") or not _missing(row, "messages") or not _missing(row, "conversations"):
        return "sft"
    if not _missing(row, "prompt"):
        return "test"
    return "unknown"


def _local_row(row: Mapping, index: int, id_prefix: str) -> dict:
    kind = local_row_kind(row)
    rid = _row_id(row, index, id_prefix)
    meta = _meta(row)
    if kind == "pref":
        if _missing(row, "prompt"):
            chosen, rejected = row.get("chosen"), row.get("rejected")
            if isinstance(chosen, list) and isinstance(rejected, list):
                return _dpo_mix_row(row, index, id_prefix)  # conversations sharing the prompt turns
            if isinstance(chosen, str) and isinstance(rejected, str):  # TRL standard, implicit prompt
                prompt_text, chosen, rejected = split_implicit_prompt(chosen, rejected)
                return pref_row(rid, _prompt(prompt_text), chosen, rejected, meta)
            _require(row, "prompt", "add a 'prompt' field, or give 'chosen'/'rejected' as full conversations")
        prompt = _prompt(row["prompt"])
        chosen = _reply(_require(row, "chosen"), "chosen", prompt)
        rejected = _reply(_require(row, "rejected"), "rejected", prompt)
        return pref_row(rid, prompt, chosen, rejected, meta)
    if kind == "sft":
        if not _missing(row, "response"):
            prompt = _prompt(_require(row, "prompt", "add a 'prompt' field (or use a 'messages' list)"))
            return sft_row(rid, prompt, _text(row["response"], "response"), meta)
        if not _missing(row, "messages"):
            msgs = _messages(row["messages"], "messages")
            last = max((j for j, m in enumerate(msgs) if m["role"] == "assistant"), default=None)
            if last is None:
                raise RowError("'messages' has no assistant turn", "end 'messages' with the assistant reply")
            return sft_row(rid, _check_prompt(msgs[:last], "messages before the last assistant turn"),
                           msgs[last]["content"], meta)
        return _sharegpt_row(row, index, id_prefix)
    if kind == "test":
        prompt = _prompt(row["prompt"])
        return {"id": rid, "prompt": prompt, "meta": meta}
    keys = ", ".join(sorted(k for k, v in row.items() if v is not None)) or "none"
    raise RowError(f"unrecognised row (fields: {keys})",
                   "use prompt+chosen+rejected, chosen/rejected message lists, prompt+response, or messages")


_local_row_checked = _with_id(_local_row)

_KIND_ONE = {"pref": "a preference row", "sft": "an SFT row", "test": "a prompt-only (test) row"}
_KIND_MANY = {"pref": "preference rows", "sft": "SFT rows", "test": "prompt-only (test) rows"}


def is_helpsteer2_schema(rows: Sequence[Mapping]) -> bool:
    first = rows[0] if rows else None
    return (isinstance(first, Mapping) and not _missing(first, "helpfulness") and not _missing(first, "response")
            and _missing(first, "chosen"))


def convert_local(raw_rows: Sequence[Mapping], id_prefix: str, allowed: Sequence[str],
                  strict: bool = True) -> tuple[str, Converted]:
    """Convert a local file's rows; all rows must be the same kind, one of ``allowed``. Returns (kind, rows)."""
    if is_helpsteer2_schema(raw_rows) and "pref" in allowed:
        return "pref", convert_helpsteer2(raw_rows, id_prefix, strict=True)
    out: list[dict] = []
    kind = None
    seen: dict[str, int] = {}
    for i, raw in enumerate(raw_rows):
        row_kind = local_row_kind(raw) if isinstance(raw, Mapping) else "unknown"
        if row_kind != "unknown":
            if kind is None:
                kind = row_kind
                if kind not in allowed:
                    raise RowError(f"this file holds {_KIND_MANY[kind]}, expected "
                                   + " or ".join(_KIND_MANY[k] for k in allowed),
                                   "move the rows to the file meant for them (train/val: preference rows, "
                                   "sft: SFT rows, test: prompts)", index=i)
            elif row_kind != kind:
                rid = raw.get("id")
                raise RowError(f"this is {_KIND_ONE[row_kind]} but earlier rows are {_KIND_MANY[kind]}",
                               "keep one kind of row per file (preference rows in train.jsonl/val.jsonl, "
                               "SFT rows in sft.jsonl, prompts in test.jsonl)", index=i,
                               row_id=None if rid is None else str(rid))
        row = _local_row_checked(raw, i, id_prefix)
        if row["id"] in seen:
            raise RowError(f"duplicate id {_short(row['id'])} (also used by row {seen[row['id']]})",
                           "ids must be unique within a file", index=i, row_id=row["id"])
        seen[row["id"]] = i
        out.append(row)
    return kind or "pref", Converted(out, {"rows": len(raw_rows), "kept": len(out), "skipped_invalid": 0})

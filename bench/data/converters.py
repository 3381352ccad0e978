"""Pure converters of the hub datasets' schemas (raw rows -> canonical rows + counts; no I/O), one per adapter in
:data:`bench.data.adapters.ADAPTERS`, and the strict/lenient per-row machinery they share."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

from bench.data.rows import (MAX_INVALID_FRACTION, RowError, _check_prompt, _messages, _meta, _require, _row_id, _short,
                             _split_final_assistant, _text, _typename, pref_row, sft_row)

# ----------------------------------------------------------------------------------------------------------
# pure converters (raw rows -> canonical rows)
# ----------------------------------------------------------------------------------------------------------


@dataclass
class Converted:
    rows: list[dict]
    stats: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Adapter:
    """A hub dataset the harness knows by name: where its splits are and the pure converter of its rows."""

    name: str
    hf_id: str
    splits: dict[str, str]  # role ("train" / "val") -> HF split name
    kind: str  # "pref" or "sft"
    convert: Callable[..., Converted]  # (raw_rows, id_prefix, strict=True) -> Converted; pure
    description: str = ""


def _with_id(fn: Callable[[Mapping, int, str], dict]) -> Callable[[Mapping, int, str], dict]:
    """Run a per-row converter, tagging a RowError with the row index and (when readable) the row id."""

    def wrapped(row: Mapping, index: int, id_prefix: str) -> dict:
        try:
            if not isinstance(row, Mapping):
                raise RowError(f"row must be a JSON object, got {_typename(row)}", "write one JSON object per row")
            return fn(row, index, id_prefix)
        except RowError as e:
            e.index = index
            if e.row_id is None and isinstance(row, Mapping):
                try:
                    e.row_id = _row_id(row, index, id_prefix) if row.get("id") is not None else None
                except RowError:
                    e.row_id = None
            raise

    return wrapped


def _per_row(fn: Callable[[Mapping, int, str], dict]) -> Callable[..., Converted]:
    """Build a list converter from a per-row converter (strict: raise; lenient: skip and count)."""
    row_fn = _with_id(fn)

    def convert(raw_rows: Sequence[Mapping], id_prefix: str, strict: bool = True) -> Converted:
        out, skipped, first = [], 0, None
        seen: dict[str, int] = {}
        for i, raw in enumerate(raw_rows):
            try:
                row = row_fn(raw, i, id_prefix)
                if row["id"] in seen:
                    raise RowError(f"duplicate id {_short(row['id'])} (also used by row {seen[row['id']]})",
                                   "ids must be unique within a split", index=i, row_id=row["id"])
            except RowError as e:
                if strict:
                    raise
                skipped += 1
                first = first or e
                continue
            seen[row["id"]] = i
            out.append(row)
        _check_skips(len(raw_rows), skipped, first)
        return Converted(out, {"rows": len(raw_rows), "kept": len(out), "skipped_invalid": skipped})

    return convert


def _check_skips(n: int, skipped: int, first: RowError | None) -> None:
    if skipped and first is not None and skipped > MAX_INVALID_FRACTION * n:
        first.problem = f"{skipped} of {n} rows are malformed, e.g.: {first.problem}"
        first.fix = "the upstream schema may have changed; " + first.fix
        raise first


# --- argilla/dpo-mix-7k ------------------------------------------------------------------------------------


def _dpo_mix_row(row: Mapping, index: int, id_prefix: str) -> dict:
    rid = _row_id(row, index, id_prefix)
    chosen_msgs = _messages(_require(row, "chosen"), "chosen")
    rejected_msgs = _messages(_require(row, "rejected"), "rejected")
    prompt, chosen = _split_final_assistant(chosen_msgs, "chosen")
    prompt_r, rejected = _split_final_assistant(rejected_msgs, "rejected")
    if prompt != prompt_r:
        raise RowError("the turns before the final assistant reply differ between 'chosen' and 'rejected'",
                       "both conversations must share the same prompt turns and differ only in the last reply")
    if not prompt:
        raise RowError("'chosen' has no turns before the final assistant reply",
                       "put the user prompt before the assistant reply in both 'chosen' and 'rejected'")
    _check_prompt(prompt, "chosen prompt turns")
    meta = {}
    if isinstance(row.get("dataset"), str):
        meta["source"] = row["dataset"]
    for key in ("chosen_rating", "rejected_rating", "chosen_model", "rejected_model"):
        if row.get(key) is not None:
            meta[key] = row[key]
    meta.update(_meta(row))
    return pref_row(rid, prompt, chosen, rejected, meta)


convert_dpo_mix = _per_row(_dpo_mix_row)


# --- nvidia/HelpSteer2 -------------------------------------------------------------------------------------

HELPSTEER2_ATTRIBUTES = ("helpfulness", "correctness", "coherence", "complexity", "verbosity")
_HS2_TURN = re.compile(r"\n?<extra_id_1>(User|Assistant)\n")


def parse_helpsteer2_prompt(text: str) -> list[dict]:
    """HelpSteer2 multi-turn prompts separate turns with ``\\n<extra_id_1>Assistant\\n`` / ``...User\\n``."""
    parts = _HS2_TURN.split(text)
    msgs = [{"role": "user", "content": parts[0]}]
    for role, content in zip(parts[1::2], parts[2::2]):
        msgs.append({"role": role.lower(), "content": content})
    return msgs


def _hs2_check(row: Mapping, index: int) -> tuple[str, str, float]:
    try:
        if not isinstance(row, Mapping):
            raise RowError(f"row must be a JSON object, got {_typename(row)}", "write one JSON object per row")
        prompt = _text(_require(row, "prompt"), "prompt")
        response = _text(_require(row, "response"), "response")
        score = _require(row, "helpfulness", "add a numeric 'helpfulness' rating to every row")
        if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
            raise RowError(f"field 'helpfulness' must be a number, got {_short(score)}",
                           "store 'helpfulness' as a number (HelpSteer2 uses 0-4)")
        _check_prompt(parse_helpsteer2_prompt(prompt))
        return prompt, response, score
    except RowError as e:
        e.index = index
        raise


def convert_helpsteer2(raw_rows: Sequence[Mapping], id_prefix: str, strict: bool = True) -> Converted:
    """Consecutive rows sharing a prompt form a group; chosen = highest helpfulness, rejected = lowest.

    Groups of two whose ratings tie are dropped (``ties_dropped``); larger groups use best vs worst (dropped
    if all tie); single rows are dropped (``singletons_dropped``). Pair id: ``{prefix}-{index of the group's
    first row:06d}``.
    """
    valid: list[tuple[int, str, str, float, Mapping]] = []
    skipped, first = 0, None
    for i, raw in enumerate(raw_rows):
        try:
            prompt, response, score = _hs2_check(raw, i)
        except RowError as e:
            if strict:
                raise
            skipped, first = skipped + 1, first or e
            continue
        valid.append((i, prompt, response, score, raw))
    _check_skips(len(raw_rows), skipped, first)

    groups: list[list[tuple[int, str, str, float, Mapping]]] = []
    for item in valid:
        if groups and groups[-1][0][1] == item[1]:
            groups[-1].append(item)
        else:
            groups.append([item])

    out: list[dict] = []
    stats = {"rows": len(raw_rows), "pairs": 0, "ties_dropped": 0, "singletons_dropped": 0,
             "groups_larger_than_2": 0, "skipped_invalid": skipped}
    for group in groups:
        if len(group) == 1:
            stats["singletons_dropped"] += 1
            continue
        if len(group) > 2:
            stats["groups_larger_than_2"] += 1
        best = max(group, key=lambda g: g[3])  # first row with the top rating
        worst = min(group, key=lambda g: g[3])  # first row with the lowest rating
        if best[3] == worst[3]:
            stats["ties_dropped"] += 1
            continue
        start = group[0][0]

        def scores(raw: Mapping) -> dict:
            return {a: raw[a] for a in HELPSTEER2_ATTRIBUTES if raw.get(a) is not None}

        meta = {"chosen_helpfulness": best[3], "rejected_helpfulness": worst[3], "group_size": len(group),
                "chosen_scores": scores(best[4]), "rejected_scores": scores(worst[4])}
        try:
            row = pref_row(f"{id_prefix}-{start:06d}", parse_helpsteer2_prompt(best[1]), best[2], worst[2], meta)
        except RowError as e:
            e.index, e.row_id = best[0], f"{id_prefix}-{start:06d}"
            if strict:
                raise
            stats["skipped_invalid"] += 1
            continue
        out.append(row)
    stats["pairs"] = len(out)
    return Converted(out, stats)


# --- hkust-nlp/deita-10k-v0 (ShareGPT) -----------------------------------------------------------------------

SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "system": "system"}


def _sharegpt_row(row: Mapping, index: int, id_prefix: str) -> dict:
    rid = _row_id(row, index, id_prefix)
    turns = _messages(_require(row, "conversations"), "conversations", SHAREGPT_ROLES, "from", "value")
    last = max((j for j, t in enumerate(turns) if t["role"] == "assistant"), default=None)
    if last is None:
        raise RowError("'conversations' has no gpt turn", "add the assistant reply as a {\"from\": \"gpt\"} turn")
    prompt = _check_prompt(turns[:last], "conversations before the last gpt turn")
    meta = {}
    if isinstance(row.get("source"), str):
        meta["source"] = row["source"]
    meta.update(_meta(row))
    return sft_row(rid, prompt, turns[last]["content"], meta)


convert_deita = _per_row(_sharegpt_row)

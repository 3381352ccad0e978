"""Dataset adapters: hub datasets and local JSON/JSONL files -> canonical rows (docs/ARCHITECTURE.md).

Canonical rows:
- preference: ``{"id", "prompt": [messages ending in a user turn], "chosen": str, "rejected": str, "meta": {}}``
- SFT: ``{"id", "prompt": [messages], "response": str, "meta": {}}``
- test prompt: ``{"id", "prompt": [messages], "meta": {"family": str, ...}}``

Every adapter in :data:`ADAPTERS` names its Hugging Face dataset id, which HF split feeds which role
("train" / "val"), the kind of rows it produces ("pref" or "sft") and a *pure* converter
(raw rows -> canonical rows + counts; no I/O). :func:`load_adapter` fetches the raw rows, either from the hub
(``datasets.load_dataset(hf_id, split=...)``) or from a local copy in the hub schema
(``datasets.load_dataset("json", data_files=...)``), runs the converter and assembles a
:class:`~bench.data.bundle.DatasetBundle`. :func:`load_local` does the same for the project's own local formats.

Validation problems raise :class:`bench.errors.BenchError` with one line: where (file + line, or dataset +
split + row, and the row id when known), what is wrong, and how to fix it. Nothing is returned half-loaded.

Local data (a ``local_path`` copy or a local file) is validated strictly: the first bad row raises. Rows
downloaded from the hub are converted leniently by default: a malformed row is skipped and counted in the
stats (``skipped_invalid``) so that one bad upstream row cannot make a public dataset unusable; if more than
10% of a split is malformed the load fails with the first problem (the upstream schema has likely changed).
"""
from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from bench.data.bundle import DatasetBundle
from bench.errors import BenchError

from bench.data.reading import _hub_rows, _quiet_datasets, read_json_rows  # noqa: F401
from bench.data.rows import (  # noqa: F401 (re-exported)
    ROLES,
    VAL_FRACTION,
    MAX_INVALID_FRACTION,
    LOCAL_EXTENSIONS,
    LOCAL_DIR_FILES,
    RowError,
    _one_line,
    _short,
    Source,
    _missing,
    _require,
    _a,
    _typename,
    _text,
    _clean,
    _meta,
    _row_id,
    _messages,
    _check_prompt,
    _prompt,
    _split_final_assistant,
    _check_pair,
    GENERATED_ID,
    content_ids,
    split_implicit_prompt,
    pref_row,
    sft_row,
    test_row_from,
)


# ----------------------------------------------------------------------------------------------------------
# pure converters (raw rows -> canonical rows)
# ----------------------------------------------------------------------------------------------------------


@dataclass
class Converted:
    rows: list[dict]
    stats: dict = field(default_factory=dict)


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


# ----------------------------------------------------------------------------------------------------------
# adapter registry
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Adapter:
    name: str
    hf_id: str
    splits: dict[str, str]  # role ("train" / "val") -> HF split name
    kind: str  # "pref" or "sft"
    convert: Callable[..., Converted]  # (raw_rows, id_prefix, strict=True) -> Converted; pure
    description: str = ""


ADAPTERS: dict[str, Adapter] = {
    "dpo-mix-7k": Adapter(
        name="dpo-mix-7k", hf_id="argilla/dpo-mix-7k", splits={"train": "train", "val": "test"}, kind="pref",
        convert=convert_dpo_mix,
        description="chosen/rejected conversations; HF test split -> pref_val and test prompts"),
    "helpsteer2": Adapter(
        name="helpsteer2", hf_id="nvidia/HelpSteer2", splits={"train": "train", "val": "validation"}, kind="pref",
        convert=convert_helpsteer2,
        description="rated responses; consecutive rows sharing a prompt -> higher vs lower helpfulness"),
    "deita-10k": Adapter(
        name="deita-10k", hf_id="hkust-nlp/deita-10k-v0", splits={"train": "train"}, kind="sft",
        convert=convert_deita,
        description="ShareGPT conversations -> SFT rows (prompt = turns before the last gpt turn)"),
}


def find_adapter(name: str) -> Adapter | None:
    """An adapter by name or HF id (case-insensitive)."""
    key = name.strip().lower()
    for adapter in ADAPTERS.values():
        if key in (adapter.name.lower(), adapter.hf_id.lower()):
            return adapter
    return None


# ----------------------------------------------------------------------------------------------------------
# splits and assembly
# ----------------------------------------------------------------------------------------------------------


def _order_key(seed: int, salt: str, row_id: str) -> str:
    return hashlib.sha256(f"{seed}:{salt}:{row_id}".encode()).hexdigest()


def seeded_pick(rows: list[dict], n: int, seed: int, salt: str) -> tuple[list[dict], list[dict]]:
    """Deterministically pick n rows (by a seeded hash of their ids); both parts keep the original order."""
    if n >= len(rows):
        return list(rows), []
    ranked = sorted(range(len(rows)), key=lambda i: _order_key(seed, salt, rows[i]["id"]))
    chosen = set(ranked[:n])
    return ([r for i, r in enumerate(rows) if i in chosen], [r for i, r in enumerate(rows) if i not in chosen])


def carve_val(train: list[dict], seed: int, fraction: float = VAL_FRACTION) -> tuple[list[dict], list[dict]]:
    """Split a validation part off train: ``fraction`` of the rows, at least 1 when train has 2+ rows."""
    if len(train) < 2:
        return list(train), []
    n_val = min(len(train) - 1, max(1, round(fraction * len(train))))
    val, rest = seeded_pick(train, n_val, seed, "val")
    return rest, val


def assemble(name: str, version: str, kind: str, train: list[dict], val: list[dict] | None,
             test: list[dict] | None, sft: list[dict] | None, seed: int,
             stats: dict, family: str | None = None) -> DatasetBundle:
    """Fill the bundle splits: carve pref_val off train when missing; test prompts from pref_val if none
    (their meta.family is `family`, default the dataset name)."""
    splits: dict[str, list[dict]] = {"sft": list(sft or []), "pref_train": [], "pref_val": [], "test": []}
    if kind == "pref":
        if val is None:
            train, val = carve_val(train, seed)
            stats["pref_val"] = {"carved_from_train": len(val), "seed": seed}
        splits["pref_train"], splits["pref_val"] = train, val
        if test is None:
            test = [test_row_from(r, family or name) for r in val]
            stats.setdefault("test", {})["from_pref_val"] = len(test)
    else:
        splits["sft"] = train + splits["sft"]
    splits["test"] = list(test or [])
    return DatasetBundle(name=name, version=version, splits=splits)


def _resolve_local_copy(adapter: Adapter, local_path: str) -> dict[str, Path]:
    """Which local file feeds each role: a file is the train split; a directory holds <hf split>.jsonl."""
    p = Path(local_path).expanduser()
    if not p.exists():
        raise BenchError(f"local copy of '{adapter.name}' not found: {local_path}; give a .jsonl file or a directory "
                         f"with {', '.join(s + '.jsonl' for s in adapter.splits.values())}")
    if p.is_file():
        return {"train": p}
    files: dict[str, Path] = {}
    for role, split in adapter.splits.items():
        stems = [split] + [s for s in LOCAL_DIR_FILES.get(role, ()) if s != split]
        for stem in stems:
            hit = next((p / f"{stem}{ext}" for ext in LOCAL_EXTENSIONS if (p / f"{stem}{ext}").is_file()), None)
            if hit is not None:
                files[role] = hit
                break
    if "train" not in files:
        raise BenchError(f"{local_path}: no {adapter.splits['train']}.jsonl (or .json) in this directory; "
                         f"add the train split of {adapter.hf_id} there")
    return files


def load_adapter(adapter: Adapter | str, seed: int = 0, local_path: str | None = None,
                 revision: str | None = None, strict: bool | None = None) -> tuple[DatasetBundle, dict]:
    """Load one adapter's data into a bundle. Returns (bundle, stats per split)."""
    if isinstance(adapter, str):
        found = find_adapter(adapter)
        if found is None:
            raise BenchError(f"unknown dataset adapter '{adapter}'; known: {', '.join(ADAPTERS)}")
        adapter = found
    strict = (local_path is not None) if strict is None else strict
    raw: dict[str, tuple[list[dict], Source]] = {}
    if local_path is not None:
        for role, path in _resolve_local_copy(adapter, local_path).items():
            raw[role] = read_json_rows(path)
    else:
        for role, split in adapter.splits.items():
            raw[role] = _hub_rows(adapter, split, revision)

    converted: dict[str, list[dict]] = {}
    stats: dict[str, dict] = {}
    for role, (rows, source) in raw.items():
        prefix = adapter.name if role == "train" else f"{adapter.name}-{adapter.splits[role]}"
        try:
            result = adapter.convert(rows, prefix, strict=strict)
        except RowError as e:
            raise source.error(e) from None
        if not result.rows:
            raise BenchError(f"{source.label}: no usable rows after conversion ({_one_line(result.stats)}); "
                             "check that the file has the schema of " + adapter.hf_id)
        converted[role] = result.rows
        target = {"pref": {"train": "pref_train", "val": "pref_val"}, "sft": {"train": "sft", "val": "sft"}}
        stats[target[adapter.kind][role]] = result.stats

    version = f"{adapter.name}:{adapter.hf_id}"
    if revision:
        version += f"@{revision}"
    if local_path is not None:
        version += ":local-copy"
    train = converted["train"]
    val = converted.get("val")
    if adapter.kind == "sft":
        train = train + (val or [])
        val = None
    bundle = assemble(adapter.name, version, adapter.kind, train, val, None, None, seed, stats)
    return bundle, stats


LOCAL_FAMILY = "local"  # meta.family of the test prompts of a local dataset


def load_local(path: str | Path, seed: int = 0) -> tuple[DatasetBundle, dict]:
    """Load a local .jsonl/.json/.parquet file or a directory (train / val|validation / test / sft files).

    Rows without an "id" get one derived from their content (`content_ids`), never from the file name or the
    row's position, and test prompts carry the family "local": renaming the file changes nothing."""
    p = Path(path).expanduser()
    label = str(path)
    if not p.exists():
        raise BenchError(f"dataset path not found: {label}; check the path")
    stats: dict[str, dict] = {}
    if p.is_file():
        name = p.stem
        rows, source = read_json_rows(p)
        try:
            kind, result = convert_local(rows, GENERATED_ID, ("pref", "sft", "test"))
        except RowError as e:
            raise source.error(e) from None
        result.rows = content_ids(result.rows)
        version = f"local:{p.name}"
        if kind == "test":
            stats["test"] = result.stats
            test = [{**r, "meta": {"family": LOCAL_FAMILY, **r["meta"]}} for r in result.rows]
            return assemble(name, version, "pref", [], [], test, None, seed, stats, LOCAL_FAMILY), stats
        stats["pref_train" if kind == "pref" else "sft"] = result.stats
        return assemble(name, version, kind, result.rows, None, None, None, seed, stats, LOCAL_FAMILY), stats

    files: dict[str, Path] = {}
    for role, stems in LOCAL_DIR_FILES.items():
        for stem in stems:
            hit = next((p / f"{stem}{ext}" for ext in LOCAL_EXTENSIONS if (p / f"{stem}{ext}").is_file()), None)
            if hit is not None:
                files[role] = hit
                break
    if not files:
        raise BenchError(f"{label}: directory has none of train.jsonl, val.jsonl, validation.jsonl, test.jsonl, "
                         "sft.jsonl (or .json/.parquet); add at least one, or point at a single file")
    name = p.resolve().name or "local"
    allowed = {"train": ("pref", "sft"), "val": ("pref",), "test": ("test", "pref", "sft"), "sft": ("sft",)}
    out: dict[str, tuple[str, list[dict]]] = {}
    for role, fpath in files.items():
        rows, source = read_json_rows(fpath)
        try:
            kind, result = convert_local(rows, GENERATED_ID, allowed[role])
        except RowError as e:
            raise source.error(e) from None
        result.rows = content_ids(result.rows)
        if role == "test" and kind != "test":
            result.rows = [test_row_from(r, LOCAL_FAMILY) for r in result.rows]
        elif role == "test":
            result.rows = [{**r, "meta": {"family": LOCAL_FAMILY, **r["meta"]}} for r in result.rows]
        out[role] = (kind, result.rows)
        key = {"train": "pref_train" if kind == "pref" else "sft", "val": "pref_val", "test": "test", "sft": "sft"}
        stats[key[role]] = result.stats

    train_kind, train = out.get("train", ("pref", []))
    if train_kind == "sft" and "sft" in out:
        raise BenchError(f"{label}: train{files['train'].suffix} holds SFT rows and sft{files['sft'].suffix} exists "
                         "too; put all SFT rows in sft.jsonl and preference rows in train.jsonl")
    sft = out["sft"][1] if "sft" in out else (train if train_kind == "sft" else [])
    pref_train = train if train_kind == "pref" else []
    val = out["val"][1] if "val" in out else None
    if val is None and not pref_train:
        val = []
    test = out["test"][1] if "test" in out else None
    bundle = assemble(name, f"local:{name}", "pref", pref_train, val, test, sft, seed, stats, LOCAL_FAMILY)
    return bundle, stats

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
The converters live in :mod:`bench.data.converters` (hub schemas) and :mod:`bench.data.local_formats` (local
formats), the split carving and bundle assembly in :mod:`bench.data.splits`; their names are re-exported here.

Validation problems raise :class:`bench.errors.BenchError` with one line: where (file + line, or dataset +
split + row, and the row id when known), what is wrong, and how to fix it. Nothing is returned half-loaded.

Local data (a ``local_path`` copy or a local file) is validated strictly: the first bad row raises. Rows
downloaded from the hub are converted leniently by default: a malformed row is skipped and counted in the
stats (``skipped_invalid``) so that one bad upstream row cannot make a public dataset unusable; if more than
10% of a split is malformed the load fails with the first problem (the upstream schema has likely changed).
"""
from __future__ import annotations

from pathlib import Path

from bench.data.bundle import DatasetBundle
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
from bench.data.converters import (  # noqa: F401 (re-exported)
    Adapter,
    Converted,
    HELPSTEER2_ATTRIBUTES,
    SHAREGPT_ROLES,
    convert_deita,
    convert_dpo_mix,
    convert_helpsteer2,
    parse_helpsteer2_prompt,
)
from bench.data.local_formats import convert_local, is_helpsteer2_schema, local_row_kind  # noqa: F401 (re-exported)
from bench.data.splits import assemble, carve_val, seeded_pick  # noqa: F401 (re-exported)
from bench.errors import BenchError

# ----------------------------------------------------------------------------------------------------------
# adapter registry
# ----------------------------------------------------------------------------------------------------------


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

"""Reading raw rows: local JSON/JSONL/Parquet through `datasets.load_dataset("json"|"parquet")`, hub splits through
`datasets.load_dataset(hf_id)`, each failure a one-line BenchError."""
from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from bench.data.rows import LOCAL_EXTENSIONS, Source, _one_line, _typename
from bench.errors import BenchError

if TYPE_CHECKING:
    from bench.data.converters import Adapter


# ----------------------------------------------------------------------------------------------------------
# reading raw rows
# ----------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _quiet_datasets() -> Iterator[None]:
    """For local files: silence datasets' progress bars and its 'Failed to load JSON' log lines, and skip its
    download-count HEAD request to the hub (pointless for local files; up to 3 s per load when offline)."""
    import datasets
    import datasets.config
    from datasets.utils import logging as ds_logging

    level = ds_logging.get_verbosity()
    bars_off = datasets.utils.are_progress_bars_disabled()
    counts = datasets.config.HF_UPDATE_DOWNLOAD_COUNTS
    ds_logging.set_verbosity(logging.CRITICAL + 10)
    datasets.disable_progress_bars()
    datasets.config.HF_UPDATE_DOWNLOAD_COUNTS = False
    try:
        yield
    finally:
        datasets.config.HF_UPDATE_DOWNLOAD_COUNTS = counts
        ds_logging.set_verbosity(level)
        if not bars_off:
            datasets.enable_progress_bars()


def _parse_raw(path: Path, label: str) -> list[Any]:
    """Parse a JSON/JSONL file with the json module, raising a BenchError that names the bad line."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if path.suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise BenchError(f"{label} line {e.lineno}: invalid JSON ({e.msg}, column {e.colno}); "
                             "fix the syntax (a .json file must hold one JSON array of row objects)") from None
        if not isinstance(data, list):
            raise BenchError(f"{label}: expected a JSON array of row objects, got a JSON {_typename(data)}; "
                             "wrap the rows in [...] or write them one per line to a .jsonl file")
        rows = data
        for i, row in enumerate(rows):
            if not isinstance(row, dict):
                raise BenchError(f"{label} row {i}: expected a JSON object, got {_typename(row)}; "
                                 "each array item must be one row object")
        return rows
    rows = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise BenchError(f"{label} line {lineno}: invalid JSON ({e.msg}, column {e.colno}); "
                             "fix or remove this line (JSONL needs one complete JSON object per line)") from None
        if not isinstance(row, dict):
            raise BenchError(f"{label} line {lineno}: expected a JSON object, got {_typename(row)}; "
                             "write one {...} row object per line")
        rows.append(row)
    return rows


def read_json_rows(path: str | Path) -> tuple[list[dict], Source]:
    """Rows of a local .jsonl/.json file through ``datasets.load_dataset("json", data_files=...)``."""
    p = Path(path).expanduser()
    label = str(path)
    if not p.exists():
        raise BenchError(f"dataset file not found: {label}; check the path (a .jsonl/.json file or a directory)")
    if not p.is_file():
        raise BenchError(f"{label} is not a file; give a .jsonl or .json file")
    if p.suffix not in LOCAL_EXTENSIONS:
        raise BenchError(f"{label}: unsupported file type '{p.suffix}'; convert it to .jsonl (one JSON object "
                         "per line), .json (an array of objects) or .parquet")
    if p.suffix == ".parquet":
        return _parquet_rows(p, label), Source(label, p)
    try:
        with open(p, encoding="utf-8") as f:
            empty = not f.read(1 << 16).strip()
    except (OSError, UnicodeDecodeError) as e:
        raise BenchError(f"{label}: cannot be read as UTF-8 text ({_one_line(e)}); save it as UTF-8 JSON") from None
    if empty:
        raise BenchError(f"{label} is empty; add at least one row")
    import datasets

    source = Source(label, p)
    try:
        with _quiet_datasets():
            ds = datasets.load_dataset("json", data_files=str(p.resolve()), split="train")
        rows = ds.to_list()
    except Exception:  # noqa: BLE001 - datasets raises many types; diagnose with the json module
        # raises a BenchError naming the bad line if there is one; otherwise the JSON is valid but datasets
        # could not infer one table schema for it, and the parsed rows are used as they are
        rows = _parse_raw(p, label)
    if not rows:
        raise BenchError(f"{label} has no rows; add at least one row")
    return rows, source


def _parquet_rows(p: Path, label: str) -> list[dict]:
    import datasets

    try:
        with _quiet_datasets():
            rows = datasets.load_dataset("parquet", data_files=str(p.resolve()), split="train").to_list()
    except Exception as e:  # noqa: BLE001 - not a parquet file, unreadable, ...
        raise BenchError(f"{label}: cannot be read as Parquet ({type(e).__name__}: {_one_line(e, 200)}); write it "
                         "with pandas.DataFrame.to_parquet or datasets.Dataset.to_parquet") from None
    if not rows:
        raise BenchError(f"{label} has no rows; add at least one row")
    return rows


def hub_dataset_rows(hf_id: str, revision: str | None = None) -> dict[str, list[dict]]:
    """Every split of a Hugging Face hub dataset (`datasets.load_dataset(hf_id)`), as raw rows per split name."""
    import datasets

    rev = f" at revision {revision}" if revision else ""
    try:
        with _quiet_datasets():
            loaded = datasets.load_dataset(hf_id, revision=revision)
        if isinstance(loaded, datasets.Dataset):
            loaded = {"train": loaded}
        return {name: split.to_list() for name, split in loaded.items()}
    except Exception as e:  # noqa: BLE001 - network, auth, missing repo, cache problems
        raise BenchError(
            f"could not load dataset '{hf_id}'{rev} from the Hugging Face Hub ({type(e).__name__}: "
            f"{_one_line(e, 200)}); check the id, network access and HF_TOKEN, or download it and pass the local "
            ".jsonl/.json/.parquet file or directory to --dataset") from None


def _hub_rows(adapter: "Adapter", split: str, revision: str | None) -> tuple[list[dict], Source]:
    import datasets

    rev = f", revision {revision}" if revision else ""
    label = f"dataset '{adapter.name}' ({adapter.hf_id}, split '{split}'{rev})"
    try:
        ds = datasets.load_dataset(adapter.hf_id, split=split, revision=revision)
        rows = ds.to_list()
    except Exception as e:  # noqa: BLE001 - network, auth, missing repo/split, cache problems
        raise BenchError(
            f"could not download {label} from the Hugging Face Hub ({type(e).__name__}: {_one_line(e, 200)}); "
            f"check network access and HF_TOKEN, or pass --dataset PATH to a local copy "
            f"(a .jsonl file or a directory with {split}.jsonl in the same schema)") from None
    return rows, Source(label)

"""Where examples come from: `--data_file` (with `--data_split`, `--data_revision`, `--columns`), or rows in memory.

`--data_file` is one of:

- a JSON list or JSONL file, read as ever (`data.read_json_items`: UTF-8, a byte-order mark skipped);
- a Parquet file (`.parquet`), read with pyarrow;
- a folder written by Hugging Face `datasets`' `save_to_disk` (a `Dataset`, or a `DatasetDict` with `--data_split`);
- a Hugging Face dataset: a hub name (`org/name`, e.g. `re-align/just-eval-instruct --data_split test`), or a local
  folder laid out as a hub dataset repository (data files, no save_to_disk state), through one call,
  `datasets.load_dataset(name, split=--data_split, revision=--data_revision)`.

The Python API also takes rows in memory: a list of dicts, a `pandas.DataFrame` or a `datasets.Dataset`, and `columns`
as a dict {column: field} too. Reading folders and hub datasets
needs the optional extra `aligntds[datasets]`; JSON and Parquet do not.

A table's rows (Parquet, datasets) are made plain JSON values (what a JSON file of them would hold: lists, strings,
numbers, null), and their columns are renamed to the fields the pipeline reads with `--columns SOURCE=FIELD,...`
(`instruction=pure_input,output=output`). Without `--columns`, a table that has an `instruction` column and no
`pure_input` (just-eval-instruct's own names: `id`, `instruction`, `output`, `category`, `dataset`, `source_id`) has
it read as `pure_input`; JSON files are read as they are (`generate_outputs.py` takes `instruction` there itself).
Every source's rows are then checked as a JSON file's are (`data.check_text`: lone surrogates, NaN ids; then the
caller's field checks: `data.load_examples`, `generate.load_instructions`).

    rows = read_items("hub-org/prompts", split="test", columns="question=pure_input")
    source_name(rows_in_memory)      # "data": how messages name rows given in memory
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

from .data import check_text, read_json_items
from .errors import UserError

log = logging.getLogger("aligntds")

# A hub dataset's name: `org/name` (letters, digits, `-`, `_`, `.`), and no file suffix of ours.
_HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
FILE_SUFFIXES = (".json", ".jsonl", ".parquet")
# The data files a folder laid out as a hub dataset holds (what datasets.load_dataset reads as data, text left out: a
# folder of .txt files would be read line by line, which is no data file of examples).
DATA_SUFFIXES = (".json", ".jsonl", ".parquet", ".csv", ".tsv", ".arrow")
# just-eval-instruct's query column, read as `pure_input` when a table has no `pure_input` and no --columns is given.
DEFAULT_COLUMNS = "instruction=pure_input"


def is_hub_name(name) -> bool:
    """True for `org/name` that is no file or folder here and has no data file suffix (`.json`, `.jsonl`, `.parquet`)."""
    text = str(name)
    return bool(_HUB_NAME.match(text)) and not text.endswith(FILE_SUFFIXES) and not Path(text).exists()


def _in_memory(data) -> bool:
    return isinstance(data, list) or _is_dataset(data) or _is_frame(data)


def _is_frame(data) -> bool:
    """A `pandas.DataFrame` (checked by name, as datasets' tables are)."""
    return type(data).__module__.split(".")[0] == "pandas" and type(data).__name__ == "DataFrame"


def _is_dataset(data) -> bool:
    """A `datasets.Dataset` or `DatasetDict` (checked by name: `datasets` is only imported when it is used)."""
    return type(data).__module__.startswith("datasets.") and type(data).__name__ in ("Dataset", "DatasetDict", "IterableDataset")


def source_name(data) -> str:
    """How messages name the examples' source: the path or hub name as given, or "data" for rows in memory."""
    return "data" if _in_memory(data) else str(Path(data))


def _kind(data) -> str:
    """"rows" (a list in memory), "frame" (a DataFrame), "dataset" (in memory), "parquet", "disk" (a save_to_disk
    folder), "hub" (a hub name, or a local folder laid out as a hub dataset) or "json"."""
    if isinstance(data, list):
        return "rows"
    if _is_frame(data):
        return "frame"
    if _is_dataset(data):
        return "dataset"
    path = Path(data)
    if path.suffix == ".parquet":
        return "parquet"
    if path.is_dir():
        return "disk" if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file() else "hub"
    return "hub" if is_hub_name(data) else "json"


# A field name a column may be mapped onto (a JSON key the pipeline or a slice reads): letters, digits, `_`, `.`, `-`.
_FIELD = re.compile(r"^[\w.-]+$")


def parse_columns(spec: str | dict, where: str = "--columns") -> dict[str, str]:
    """{source column: field} of a `--columns` spec `a=b,c=d` (or of a dict {source: field}, the API's form); a one-line
    `UserError` for a malformed spec, a field that is no field name (`a=b;c=d`), a column named twice or two columns
    onto one field."""
    if isinstance(spec, dict):
        pairs = [(str(k).strip(), str(v).strip(), f"{k}={v}") for k, v in spec.items()]
    elif isinstance(spec, str):
        pairs = [(*(x.strip() for x in part.partition("=")[::2]), part.strip()) if "=" in part else ("", "", part.strip())
                 for part in spec.split(",")]
    else:
        raise UserError(f"{where}: expected SOURCE=FIELD,... or a dict {{column: field}}, got {type(spec).__name__}")
    mapping: dict[str, str] = {}
    for source, field, part in pairs:
        if not source or not field:
            raise UserError(f"{where}: {part!r} is not SOURCE=FIELD (e.g. instruction=pure_input,output=output)")
        if not _FIELD.match(field):
            raise UserError(f"{where}: {field!r} (in {part!r}) is not a field name (letters, digits, _ . -); "
                            "separate mappings with commas: instruction=pure_input,output=output")
        if source in mapping:
            raise UserError(f"{where}: column {source!r} is mapped twice")
        onto = next((s for s, f in mapping.items() if f == field), None)
        if onto is not None:
            raise UserError(f"{where}: columns {onto!r} and {source!r} both map onto the field {field!r}")
        mapping[source] = field
    return mapping


def map_columns(rows: list, columns: dict[str, str], name: str, known: list[str]) -> list:
    """`rows` with their columns renamed (`columns`: {source: field}; the other columns kept, in order). `known`: the
    table's columns. A `UserError` names an unknown column, or a field that another column of the table already is."""
    for source in columns:
        if source not in known:
            raise UserError(f"{name}: --columns names the column {source!r}, which it does not have (its columns: "
                            f"{', '.join(known) or 'none'})")
    kept = [c for c in known if c not in columns]
    for source, field in columns.items():
        if field in kept:
            raise UserError(f"{name}: --columns maps {source!r} onto {field!r}, which is also a column of it: two columns "
                            f"onto one field (map {field!r} elsewhere too)")
    return [{columns.get(k, k): v for k, v in row.items()} if isinstance(row, dict) else row for row in rows]


def _plain(rows: list) -> list:
    """A table's rows as a JSON file of them would hold them (lists, str, int, float, bool, None; numpy arrays and scalars
    as lists and numbers; other values as text)."""
    return json.loads(json.dumps(rows, ensure_ascii=False, default=_json_value))


def _json_value(value):
    """What `json.dumps` writes for a value it does not know: a numpy array or scalar's `tolist()`, else its text."""
    return value.tolist() if type(value).__module__ == "numpy" and hasattr(value, "tolist") else str(value)


def _frame_rows(frame) -> list[dict]:
    """A DataFrame's rows as a Parquet file of it gives them (pyarrow: list cells as lists, not numpy arrays; a missing
    value, NaN in pandas, as None); `to_dict` where pyarrow cannot type a column (mixed kinds of values)."""
    import pyarrow as pa

    try:
        return pa.Table.from_pandas(frame, preserve_index=False).to_pylist()
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return frame.astype(object).where(frame.notna(), None).to_dict("records")


def _datasets(name: str):
    try:
        import datasets
    except ImportError:
        raise UserError(f"{name}: reading a datasets folder or a hub dataset needs Hugging Face datasets: "
                        "pip install 'aligntds[datasets]'") from None
    return datasets


def _one_split(table, name: str, split: str | None):
    """The `Dataset` of a `DatasetDict` named by `split` (or its only one); a `Dataset` as it is."""
    if type(table).__name__ != "DatasetDict":
        if split is not None:
            raise UserError(f"{name}: holds one dataset, not splits: leave out --data_split {split}")
        return table
    if split is None:
        if len(table) == 1:
            return next(iter(table.values()))
        raise UserError(f"{name}: holds the splits {', '.join(table)}: choose one with --data_split")
    if split not in table:
        raise UserError(f"{name}: has no split {split!r} (its splits: {', '.join(table)})")
    return table[split]


def _load_dataset(name: str, split: str | None, revision: str | None):
    """A hub dataset, or a local folder laid out as one: `datasets.load_dataset(name, split=, revision=)`."""
    datasets = _datasets(name)
    try:
        table = datasets.load_dataset(name, split=split, revision=revision)
    except Exception as e:  # no network, no such dataset or split, a gated repository: many kinds of errors
        first = (str(e).strip().splitlines() or [""])[0]
        raise UserError(f"{name}: datasets.load_dataset failed ({type(e).__name__}: {first})") from None
    return _one_split(table, name, None)


def _read_table(data, kind: str, split: str | None, revision: str | None) -> tuple[list, list[str]]:
    """(rows, columns) of a table source (`_kind`: dataset, parquet, disk or hub)."""
    name = source_name(data)
    if revision is not None and kind != "hub":
        log.warning(f"--data_revision applies to hub datasets only: {name} is read as it is")
    if kind == "parquet":
        import pyarrow.parquet as pq

        if split is not None:
            raise UserError(f"{name}: a Parquet file has no splits: leave out --data_split {split}")
        if not Path(data).is_file():
            raise UserError(f"{name}: data file not found")
        try:
            table = pq.read_table(data)
        except Exception as e:  # pyarrow raises ArrowInvalid, OSError, ... for a file that is not Parquet
            raise UserError(f"{name}: not a readable Parquet file ({type(e).__name__}: {e})") from None
        return table.to_pylist(), list(table.column_names)
    if kind == "dataset":
        table = _one_split(data, name, split)
    elif kind == "disk":
        datasets = _datasets(name)
        try:
            table = datasets.load_from_disk(str(data))
        except Exception as e:  # a folder save_to_disk did not finish, or of another datasets version
            raise UserError(f"{name}: not a readable save_to_disk folder ({type(e).__name__}: {e})") from None
        table = _one_split(table, name, split)
    else:
        if Path(data).is_dir() and not any(set(p.suffixes) & set(DATA_SUFFIXES) for p in Path(data).rglob("*") if p.is_file()):
            raise UserError(f"{name}: a folder that is no dataset: neither save_to_disk's (state.json, "
                            f"dataset_dict.json) nor data files ({', '.join(DATA_SUFFIXES)})")
        table = _load_dataset(str(data), split, revision)
    if type(table).__name__ == "IterableDataset":
        raise UserError(f"{name}: an IterableDataset (streaming) cannot be read here; load it without streaming=True")
    return table.to_list(), list(table.column_names)


def read_items(data, split: str | None = None, revision: str | None = None, columns: str | dict | None = None) -> list | object:
    """The examples of a source (see the module docstring), as plain dicts, columns mapped, checked with `check_text`.

    data: a path or hub name (str or Path), or rows in memory (a list of dicts, a `pandas.DataFrame`, a
    `datasets.Dataset`/`DatasetDict`). columns: `SOURCE=FIELD,...` or a dict {column: field}.
    A JSON file is returned as `read_json_items` reads it (a list, or whatever else the JSON holds: the caller refuses
    it). Raises `UserError` (one line naming the source) for a missing file, an unreadable table, a missing split,
    a bad `--columns`, `datasets` not installed, or rows that are not valid text.
    """
    name, kind = source_name(data), _kind(data)
    if kind == "rows":
        rows, known = data, None
    elif kind == "frame":
        if split is not None:
            raise UserError(f"{name}: a DataFrame has no splits: leave out split={split!r}")
        if revision is not None:
            log.warning("revision applies to hub datasets only: the DataFrame is read as it is")
        rows, known = _plain(_frame_rows(data)), [str(c) for c in data.columns]
    elif kind == "json":
        if split is not None:
            raise UserError(f"{name}: a JSON file has no splits: leave out --data_split {split}")
        if revision is not None:
            log.warning(f"--data_revision applies to hub datasets only: {name} is read as it is")
        rows, known = read_json_items(Path(data)), None
        if not isinstance(rows, list):
            return rows
    else:
        rows, known = _read_table(data, kind, split, revision)
        rows = _plain(rows)
    if known is None:
        known = list(dict.fromkeys(k for row in rows if isinstance(row, dict) for k in row))
    if columns:
        rows = map_columns(rows, parse_columns(columns), name, known)
    elif kind not in ("rows", "json") and "instruction" in known and "pure_input" not in known:
        rows = map_columns(rows, parse_columns(DEFAULT_COLUMNS), name, known)
    check_text(rows, name)
    return rows

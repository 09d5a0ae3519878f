"""Slices: a label per example for every slice field, so that every number of the summary can be given per prompt
category or source (`data_prep --slice_by FIELD`, `--slices FILE`).

A label is the field's string; a number or boolean as JSON writes it (3, 2.5, true); an example without the field (or
with null) goes under "null"; a list or object is refused. `--slice_by` reads the data file the records were made
from (named in their meta; `--data_file` for another copy), matching examples by index and checking their ids;
`--slices` reads `{"id": "label"}` (one field, named after the file) or `{"id": {"field": "label", ...}}`, an example's
key being its id as a string (`id_key`: a string as it is, another id as JSON writes it: "null", "true", "3").

    fields = add_slices(examples, records_meta, slice_by=["category"])     # each example's ex["slices"] = {field: label}
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .data import read_json
from .errors import UserError
from .sources import is_hub_name, read_items, source_name

# The meta keys that say where the records' examples came from (besides `data_file`).
DATA_KEYS = ("data_split", "data_revision", "data_columns")


def id_key(value) -> str:
    """An example's id as a `--slices` key and as the pages and the printed summary show it: a string as it is, any other
    id as JSON writes it (`null`, `true`, `3`, `2.5`; the key of the id 3 is "3", as is that of the id "3")."""
    if isinstance(value, np.generic):  # the reference's pickles may hold numpy scalars
        value = value.item()
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)


def duplicate_ids(examples: list[dict]) -> tuple[int, str | None]:
    """(how many examples share their id's key, `id_key`, with an earlier example; the first such key, or None)."""
    seen, repeats, first = set(), 0, None
    for ex in examples:
        key = id_key(ex["id"])
        if key in seen:
            repeats += 1
            first = key if first is None else first
        seen.add(key)
    return repeats, first


def slice_label(value, where: str, field_name: str) -> str:
    """The label of a field's value: a string as is; null or a missing field "null"; a number or a boolean as
    JSON writes it (3, 2.5, true); a list or an object is refused (one-line UserError naming `where`)."""
    if value is None:
        return "null"
    if isinstance(value, str):
        return value
    if isinstance(value, (bool, int, float)):
        return json.dumps(value)
    raise UserError(f"{where}: field '{field_name}' is a {type(value).__name__}, not a label (a string, a number or null)")


def _labels_from_data(examples: list[dict], fields: list[str], data, split=None, revision=None,
                      columns=None) -> dict[str, list[str]]:
    """{field: label per example} read from the data the records were made from (a data file, or any source
    `sources.read_items` reads, with its split, revision and column mapping), by `index`, checked by `id`."""
    items = read_items(data, split, revision, columns)
    path = source_name(data)
    if not isinstance(items, list):
        raise UserError(f"{path}: expected a JSON list of examples (or JSONL), found {type(items).__name__}")
    rows = []
    for ex in examples:
        i = ex["index"]
        if not 0 <= i < len(items):
            raise UserError(f"{path}: holds {len(items)} examples, the records hold example {i} (id={ex['id']}): "
                            "not the data file the records were made from")
        item = items[i]
        if not isinstance(item, dict) or item.get("id") != ex["id"]:
            found = item.get("id") if isinstance(item, dict) else type(item).__name__
            raise UserError(f"{path}: example {i} is {found!r}, the records' example {i} has id {ex['id']!r}: "
                            "not the data file the records were made from")
        rows.append(item)
    out = {}
    for name in fields:
        if rows and not any(name in item for item in rows):
            raise UserError(f"{path}: no example has the field '{name}' (--slice_by {name})")
        out[name] = [slice_label(item.get(name), f"{path}: example {ex['index']} (id={ex['id']})", name)
                     for item, ex in zip(rows, examples)]
    return out


def _labels_from_file(examples: list[dict], path: Path) -> dict[str, list[str]]:
    """{field: label per example} from `--slices FILE`: JSON {id: label} (one field, named after the file) or
    {id: {field: label}}; an example's key is its id as a string (`id_key`: a string as it is, any other id as JSON
    writes it, `null`, `true`, `3`), an example the file does not name gets "null". The file is
    read as data files are (`data.read_json`: a byte-order mark skipped, a lone surrogate refused naming its key)."""
    table = read_json(path, "JSON slices file")
    if not isinstance(table, dict):
        raise UserError(f"{path}: expected a JSON object {{id: label}} or {{id: {{field: label}}}}, found {type(table).__name__}")
    if not table:
        raise UserError(f"{path}: holds no labels")
    nested = {isinstance(v, dict) for v in table.values()}
    if len(nested) > 1:
        raise UserError(f"{path}: mixes {{id: label}} and {{id: {{field: label}}}} entries; use one form")
    known = {id_key(ex["id"]) for ex in examples}
    unknown = [k for k in table if k not in known]
    if unknown:
        raise UserError(f"{path}: id {unknown[0]!r} is not an example of the records ({len(unknown)} unknown ids)")
    if nested != {True}:
        table = {k: {path.stem: v} for k, v in table.items()}
    fields = list(dict.fromkeys(f for entry in table.values() for f in entry))
    return {name: [slice_label(table.get(id_key(ex["id"]), {}).get(name), f"{path}: id {id_key(ex['id'])}", name)
                   for ex in examples]
            for name in fields}


def add_slices(examples: list[dict], a_meta: dict, slice_by=(), data_file=None, slices_file=None, data_split=None,
               data_revision=None, columns=None) -> list[str]:
    """Set each example's `slices` {field: label} (in place); returns the slice fields in order.

    `slice_by` fields are read from `data_file` (a path or hub name with `data_split`, `data_revision` and `columns`, or
    rows in memory), else from the data named in the records' meta (`data_file`, `data_split`, `data_revision`,
    `data_columns`, as given to logit_analysis); `slices_file` is a JSON labels file or a list of them (see
    `_labels_from_file`; a field given twice is an error).
    """
    labels: dict[str, list[str]] = {}
    if slice_by:
        given = data_file is not None
        data = data_file if given else a_meta.get("data_file")
        if data is None:
            raise UserError("--slice_by: these records do not name their data file (reference pickles, or rows scored in "
                            "memory): pass --data_file (aligntds.prepare: data=)")
        source = (data_split, data_revision, columns) if given else (a_meta.get(k) for k in DATA_KEYS)
        if isinstance(data, (str, Path)) and not Path(data).exists() and not is_hub_name(data):
            how = "--data_file" if given else "the records' data file (meta data_file); pass --data_file"
            raise UserError(f"{data}: data file not found ({how})")
        labels.update(_labels_from_data(examples, list(dict.fromkeys(slice_by)), data, *source))
    origin = dict.fromkeys(labels, "--slice_by")  # where each field's labels came from, for the message
    for path in [slices_file] if isinstance(slices_file, (str, Path)) else list(slices_file or []):
        for name, values in _labels_from_file(examples, Path(path)).items():
            if name in labels:
                raise UserError(f"{path}: field '{name}' is also given by {origin[name]}")
            labels[name], origin[name] = values, str(path)
    for n, ex in enumerate(examples):
        ex["slices"] = {name: values[n] for name, values in labels.items()}
    return list(labels)

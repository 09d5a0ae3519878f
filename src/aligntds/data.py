"""Instruction data: the reference's JSON list (or JSONL of the same objects), checked field by field.

Each example is `{"id", "pure_input", "input", "output": [answer, ...], ...}`:
`input` is the aligned model's chat-formatted prompt, `pure_input` the bare query, `output[0]` the
aligned model's answer (a plain string is accepted as well as a list). An optional `output_ids` holds
the answer's token ids as generated (`generate_outputs.py` writes them): they are scored as they are,
and `output[0]` is only shown.

    from aligntds.data import load_examples
    items = load_examples("data/Llama-2-7b-chat-hf.json", fields=("input",))
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterable
from pathlib import Path

from .errors import UserError

# The reference's i2b template (`--enable_template`), character for character.
REFERENCE_TEMPLATE = "# Query: \n ```{query}``` \n\n \n# Answer: \n ```"
QUERY_PLACEHOLDER = "{query}"
# The fields that make a one-line JSON object an example (of a JSONL file) rather than a wrapper like {"data": [...]}.
EXAMPLE_FIELDS = ("id", "pure_input", "input", "output", "instruction")


# A UTF-16 surrogate code point alone: Python's json reads the escape `\ud83d` into one, but it is not text (it cannot be
# encoded to UTF-8, so a fingerprint, a tokenizer or a page would fail on it later).
_SURROGATE = re.compile("[\ud800-\udfff]")


def escaped(text: str) -> str:
    """`text` printable in any error message: lone surrogates written as backslash escapes."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _not_text(value, field: str) -> tuple[str, str] | None:
    """(field, what is wrong) for the first string at any depth of `value` holding a lone surrogate, else None."""
    if isinstance(value, str):
        m = _SURROGATE.search(value)
        return None if m is None else (field, f"holds a lone surrogate ({escaped(m.group())} at character {m.start()}), which is "
                                              "not text")
    if isinstance(value, dict):
        for key, sub in value.items():
            name = f"{field}.{key}" if field else str(key)
            if _SURROGATE.search(str(key)):
                return escaped(name), "is a field name holding a lone surrogate, which is not text"
            found = _not_text(sub, name)
            if found:
                return found
    elif isinstance(value, list):
        for n, sub in enumerate(value):
            found = _not_text(sub, f"{field}[{n}]")
            if found:
                return found
    return None


def check_text(items: list, path: Path) -> None:
    """Refuse, naming the file, the example and the field, data that is not valid text: a lone surrogate in any
    string at any depth (keys included), or an `id` that is not a finite number (JSON's NaN, Infinity)."""
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            continue
        ident = item.get("id")
        if isinstance(ident, float) and not math.isfinite(ident):
            raise UserError(f"{path}: example {i}: field 'id' is {ident}, not a finite number: give every example a usable id")
        found = _not_text(item, "")
        if found:
            field, what = found
            shown = escaped(ident) if isinstance(ident, str) else ident
            raise UserError(f"{path}: example {i} (id={shown}): field '{field}' {what}: fix the file's encoding")


def read_objects(path, split: str | None, revision: str | None, columns: str | dict | None, what: str) -> tuple[str, list[dict]]:
    """(the source's name for messages, its items): a non-empty list of objects read by `aligntds.sources.read_items`.

    what: what the items are, for the message ("examples", "instructions"). Raises `UserError` naming the source for
    one that is not a list or is empty, and the example for an item that is not an object.
    """
    from .sources import read_items, source_name

    items = read_items(path, split, revision, columns)
    name = source_name(path)
    if not isinstance(items, list):
        raise UserError(f"{name}: expected a JSON list of {what} (or JSONL), found {json_kind(items)}")
    if not items:
        raise UserError(f"{name}: holds no examples")
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise UserError(f"{name}: example {i} is {json_kind(item)}, not an object")
    return name, items


def json_kind(value) -> str:
    """What a parsed JSON value is, as an error message says it: "an object", "a list", "a number", "a string",
    "a boolean", "null"."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    kinds = {dict: "an object", list: "a list", str: "a string", int: "a number", float: "a number"}
    return next((name for kind, name in kinds.items() if isinstance(value, kind)), type(value).__name__)


def _objects_under(value: dict) -> str | None:
    """The first key of `value` whose value is a list of objects (or an empty list), else None."""
    return next((k for k, v in value.items() if isinstance(v, list) and all(isinstance(x, dict) for x in v)), None)


def _not_a_list(path: Path, value) -> UserError:
    """The error for a file whose top level is one JSON value that is not a list: it must be a JSON list of examples or
    JSONL; the key of an object that holds a list of objects is named (`{"data": [...]}`: write that list itself)."""
    key = _objects_under(value) if isinstance(value, dict) else None
    hint = "" if key is None else f"; its key {escaped(str(key))!r} holds a list of {len(value[key])}: write that list itself"
    return UserError(f"{path}: the top level is {json_kind(value)}: a data file must be a JSON list of examples or JSONL "
                     f"(one object per line){hint}")


def read_json_items(path: Path) -> list:
    """The list a JSON file holds, or the values of a JSONL file, one per line (one-line errors naming the file).

    A UTF-8 byte-order mark at the start is skipped. A list's examples are checked with `check_text`. A file that is
    one JSON value other than a list is refused (`UserError`), except an object on one line that has a field of an
    example or holds no list of objects: the one example of a JSONL file.
    """
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise UserError(f"{path}: data file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: cannot read data file ({e})") from None
    stripped = text.lstrip()
    if not stripped:
        raise UserError(f"{path}: data file is empty")
    if stripped[0] == "[":
        try:
            items = json.loads(text)
        except json.JSONDecodeError as e:
            raise UserError(f"{path}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
        if isinstance(items, list):
            check_text(items, path)
        return items
    try:
        whole = json.loads(text)
    except json.JSONDecodeError:
        pass  # JSONL (one value per line), or not JSON: read line by line below
    else:
        one_line = len(stripped.rstrip().splitlines()) == 1
        example = isinstance(whole, dict) and (_objects_under(whole) is None or any(f in whole for f in EXAMPLE_FIELDS))
        if not (one_line and example):
            raise _not_a_list(path, whole)
    items = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            items.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise UserError(f"{path}: line {lineno} is not valid JSON ({e.msg}); expected a JSON list or JSONL") from None
    check_text(items, path)
    return items


def read_json(path: str | Path, what: str):
    """The parsed content of a JSON file, checked as data files are: a UTF-8 byte-order mark at the start is skipped,
    and a lone surrogate in any string (keys too) is refused, naming the key (`check_json_text`). A one-line
    `UserError` naming the file when it is missing, unreadable or not JSON (`what` says what it should be:
    "summary.json", "JSON slices file")."""
    try:
        value = json.loads(Path(path).read_text(encoding="utf-8-sig"))
    except FileNotFoundError:
        raise UserError(f"{path}: {what} not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{path}: not a {what} ({e})") from None
    check_json_text(value, path)
    return value


def check_json_text(value, path) -> None:
    """Refuse, naming the file and the key (`3`, `3.topic`, `runs[2]`), a lone surrogate in any string of a JSON value,
    at any depth, keys included: it is not text (see `check_text`, the same check for a data file's examples)."""
    found = _not_text(value, "")
    if found:
        key, what = found
        raise UserError(f"{path}: '{key}' {what}: fix the file's encoding")


def answer_of(item: dict) -> str:
    """The answer to analyse: `output[0]` (the reference keeps outputs as a list), or `output` itself."""
    out = item["output"]
    return out[0] if isinstance(out, list) else out


def load_examples(path, fields: Iterable[str] = (), split: str | None = None, revision: str | None = None,
                  columns: str | dict | None = None) -> list[dict]:
    """Load and check a data file; `fields` are the prompt fields this run needs besides `id` and `output`.

    `path`: any source `aligntds.sources.read_items` reads (JSON/JSONL, Parquet, a datasets folder or hub name with
    `split`, `revision` and the `columns` mapping, or rows in memory). Raises `UserError` naming the file and the
    example for a missing file, invalid JSON, a file that is not a list of examples or holds none, an example that is
    not an object, or a missing or mistyped field.
    """
    path, items = read_objects(path, split, revision, columns, "examples")
    for i, item in enumerate(items):
        where = f"{path}: example {i}"
        for field in ("id", "output", *fields):
            if field not in item:
                raise UserError(f"{where} (id={item.get('id', '?')}) has no field '{field}'")
        for field in fields:
            if not isinstance(item[field], str):
                raise UserError(f"{where} (id={item['id']}): field '{field}' must be a string")
        out = item["output"]
        if isinstance(out, list):
            if not out or not isinstance(out[0], str):
                raise UserError(f"{where} (id={item['id']}): field 'output' must be a string or a non-empty list of strings")
        elif not isinstance(out, str):
            raise UserError(f"{where} (id={item['id']}): field 'output' must be a string or a non-empty list of strings")
        ids = item.get("output_ids")
        if ids is not None and not (isinstance(ids, list) and all(type(i) is int and i >= 0 for i in ids)):
            raise UserError(f"{where} (id={item['id']}): field 'output_ids' must be a list of token ids (integers >= 0)")
    return items


def data_fingerprint(items: list[dict]) -> str:
    """A short hash of the examples' content (not of the file's formatting: JSON and JSONL agree)."""
    text = json.dumps(items, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def load_template(path: str | Path) -> str:
    """Read a base-model prompt template; it must hold the `{query}` placeholder."""
    path = Path(path)
    try:
        template = path.read_text(encoding="utf-8-sig")
    except OSError as e:
        raise UserError(f"{path}: cannot read template ({e.strerror or e})") from None
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: the template is not UTF-8 text ({e.reason} at byte {e.start})") from None
    if QUERY_PLACEHOLDER not in template:
        raise UserError(f"{path}: template has no {QUERY_PLACEHOLDER} placeholder")
    return template


def fill_template(template: str | None, query: str) -> str:
    """Put `query` into `template` (literal replacement: braces elsewhere in the template are kept)."""
    return query if template is None else template.replace(QUERY_PLACEHOLDER, query)


def data_slice(start: int, end: int | None, n: int) -> tuple[int, int]:
    """[start, end) clamped to the data (`--start`, `--end`); `end` defaults to the data length (a start past it is
    an empty slice, as with an --end past it)."""
    if start < 0:
        raise UserError(f"--start must be >= 0, got {start}")
    end = max(n, start) if end is None else end
    if end < start:
        raise UserError(f"--end ({end}) is before --start ({start})")
    return min(start, n), min(end, n)


def base_template(enable_template: bool, template_file: str | None) -> str | None:
    """The text the bare query is wrapped in for the base model (None: the query alone): the reference's template
    (`--enable_template`) or a file's (`--base_template`), not both."""
    if enable_template and template_file:
        raise UserError("give --enable_template or --base_template, not both")
    if template_file:
        return load_template(template_file)
    return REFERENCE_TEMPLATE if enable_template else None

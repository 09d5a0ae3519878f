"""Record files on disk: shard names, atomic writes, and a pickle loader that cannot run code.

A record file is a pickled list of dicts holding numpy arrays (see the README for the schema). Pickle
is kept because the reference's users have tooling around it, but every pickle this project reads
goes through `safe_load`: a restricted unpickler that rebuilds numpy arrays, numpy scalars and
builtin containers, and refuses every other global. A pickle from the internet cannot run code.

    from aligntds.store import load_records
    records = load_records("saved_logits/just_eval/llama2/llama2-i2i.pkl")
"""

from __future__ import annotations

import codecs
import io
import os
import pickle
import re
from pathlib import Path
from typing import Any

import numpy as np

try:
    from numpy._core import multiarray as _multiarray
    from numpy._core import numeric as _numeric
except ImportError:  # numpy < 2
    from numpy.core import multiarray as _multiarray
    from numpy.core import numeric as _numeric

from .errors import UserError

# Every global a pickle of numpy arrays and builtin containers can name, under the module names
# that numpy 1.x (`numpy.core`), numpy 2.x (`numpy._core`) and Python 2 pickles (`__builtin__`) use.
_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {}
for _mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
    _ALLOWED_GLOBALS[(_mod, "_reconstruct")] = _multiarray._reconstruct
    _ALLOWED_GLOBALS[(_mod, "scalar")] = _multiarray.scalar
for _mod in ("numpy.core.numeric", "numpy._core.numeric"):
    _ALLOWED_GLOBALS[(_mod, "_frombuffer")] = _numeric._frombuffer
_ALLOWED_GLOBALS[("numpy", "ndarray")] = np.ndarray
_ALLOWED_GLOBALS[("numpy", "dtype")] = np.dtype
for _mod in ("builtins", "__builtin__"):
    for _name, _obj in (("set", set), ("frozenset", frozenset), ("bytearray", bytearray)):
        _ALLOWED_GLOBALS[(_mod, _name)] = _obj
# Protocols 0-2 store bytes as latin-1 text passed through _codecs.encode.
_ALLOWED_GLOBALS[("_codecs", "encode")] = codecs.encode


class RefusedGlobal(pickle.UnpicklingError):
    """A pickle named a global that is not on the allow-list."""


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise RefusedGlobal(
                f"refusing to load global {module}.{name} (only numpy arrays and builtin containers are allowed)"
            ) from None


def safe_load(path: str | os.PathLike) -> Any:
    """Unpickle `path` allowing only numpy arrays, numpy scalars and builtin containers.

    Raises `UserError` naming the file when it is missing, unreadable, not a pickle, or names any
    other global (the object that global would have built is never created).
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"{path}: file not found") from None
    except OSError as e:
        raise UserError(f"{path}: cannot read ({e.strerror})") from None
    try:
        return _RestrictedUnpickler(io.BytesIO(data)).load()
    except RefusedGlobal as e:
        raise UserError(f"{path}: {e}") from None
    except Exception as e:  # truncated or garbage input raises many kinds of errors
        raise UserError(f"{path}: not a readable pickle ({type(e).__name__}: {e})") from None


def atomic_write_bytes(path: str | os.PathLike, data: bytes, durable: bool = True) -> None:
    """Write `data` to `path` through a temporary file in the same folder and a rename.

    A reader (or a re-run after a crash) sees either the old file, or the whole new one.
    durable: fsync before the rename (skip it for many small derived files, such as pages).
    """
    path = Path(path)
    ensure_writable_folder(path.parent)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        raise UserError(f"{path}: cannot write ({e.strerror or e})") from None
    finally:
        tmp.unlink(missing_ok=True)


def ensure_writable_folder(folder: str | os.PathLike) -> None:
    """Create `folder` if needed; a `UserError` naming it when that fails or it cannot be written to.

    Called before long work, so that a wrong output path costs seconds, not the whole run.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{folder}: is a file, where the output needs a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"{folder}: cannot create the output folder ({e.strerror or e})") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UserError(f"{folder}: the output folder is not writable")


def save_records(path: str | os.PathLike, records: list[dict]) -> None:
    """Pickle a list of records atomically (protocol 4: readable by Python >= 3.4 and numpy 1.x).

    The bytes are read back with the restricted unpickler first: a record holding anything but
    arrays and builtin containers is a bug, caught here rather than by the next stage.
    """
    data = pickle.dumps(records, protocol=4)
    _RestrictedUnpickler(io.BytesIO(data)).load()
    atomic_write_bytes(path, data)


def load_records(path: str | os.PathLike) -> list[dict]:
    """Load a record file with `safe_load` and check that it is a list of dicts."""
    records = safe_load(path)
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise UserError(f"{path}: not a record file (expected a pickled list of dicts)")
    return records


# ---------------------------------------------------------------------------------------------
# Shard names: {pair}-{mode}.[{start}:{end}].pkl, the reference's naming.

_SHARD_RE = re.compile(r"^(?P<pair>.+)-(?P<mode>[a-z0-9]+)\.\[(?P<start>\d+):(?P<end>\d+)\]\.pkl$")


def shard_name(pair: str, mode: str, start: int, end: int) -> str:
    """`llama2-i2i.[0:250].pkl`: the records of data examples start..end-1."""
    return f"{pair}-{mode}.[{start}:{end}].pkl"


def merged_name(pair: str, mode: str) -> str:
    return f"{pair}-{mode}.pkl"


def parse_shard_name(name: str) -> tuple[str, str, int, int] | None:
    """Inverse of `shard_name`; None for any other file name."""
    m = _SHARD_RE.match(name)
    if m is None:
        return None
    return m["pair"], m["mode"], int(m["start"]), int(m["end"])


# ---------------------------------------------------------------------------------------------
# Part files of answers generated by several processes: DIR/parts/NAME.[{start}:{end}].SUFFIX for the
# output DIR/NAME.SUFFIX (generate_outputs.py under accelerate launch or torchrun).


def part_path(output: str | os.PathLike, start: int, end: int) -> Path:
    """`data/parts/answers.[0:250].json` for the output `data/answers.json`: the answers to instructions start..end-1."""
    output = Path(output)
    return output.parent / "parts" / f"{output.stem}.[{start}:{end}]{output.suffix}"


def find_parts(output: str | os.PathLike) -> list[tuple[int, int, Path]]:
    """(start, end, path) of every part file of `output`, sorted by start."""
    output = Path(output)
    pattern = re.compile(re.escape(output.stem) + r"\.\[(\d+):(\d+)\]" + re.escape(output.suffix) + "$")
    folder = part_path(output, 0, 0).parent
    if not folder.is_dir():
        return []
    return sorted((int(m[1]), int(m[2]), path) for path in folder.glob("*") if (m := pattern.match(path.name)))

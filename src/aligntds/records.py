"""Records: building one from a scored example, checking a file of them, and how a result was made (`meta`).

The keys, dtypes, shapes and modes are declared once, in `aligntds.schema` (the README's tables repeat them, checked by
a test). One builder serves every mode (`make_record`: a pair record's base side is the same keys with a `base_`
prefix), and one check serves every reader (`check_records`: the merge, i2b reading its i2i file, data_prep).

    rec = make_record("i2i", index=0, id="a", answer_text="Hi.", prompts=["<s>[INST] Hi [/INST]"],
                      prompt_ids=[[1, 733, 16289]], response_ids=[15043, 29889], stats=stats, n_truncated=0, meta=meta,
                      final_generated_text="Hi.")
    check_records(load_records(path), path, "i2i")
"""

from __future__ import annotations

import logging
import platform
import subprocess
from functools import lru_cache
from pathlib import Path

import numpy as np

from . import __version__, store
from .data import answer_of
from .errors import UserError
from .presets import checkout
from .schema import KEYS, RUN_KEYS, keys_of

log = logging.getLogger("aligntds")


@lru_cache(maxsize=1)
def git_revision() -> str | None:
    """The project's git commit (with `-dirty` when the checkout has changes); None outside git, and for an installed copy
    of the package (which is not a checkout: the git repository around it, if any, is not its source)."""
    root = checkout()
    if root is None:
        return None
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True, text=True, timeout=10
        )
        return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def versions() -> dict[str, str]:
    import torch
    import transformers

    return {
        "aligntds": __version__,
        "git": git_revision(),
        "torch": str(torch.__version__),
        "transformers": str(transformers.__version__),
        "numpy": str(np.__version__),
        "python": platform.python_version(),
    }


def make_record(mode: str, *, index: int, id, answer_text: str, prompts: list[str], prompt_ids: list, response_ids,
                stats: dict[str, np.ndarray], n_truncated: int, meta: dict, final_generated_text: str | None = None,
                aligned_only=None) -> dict:
    """One record of `mode` (the keys `schema.keys_of(mode)`, in schema order).

    prompts, prompt_ids: one per side, the aligned side first (i2b: the base model's only); the second side's keys
    get the `base_` prefix. stats: the scorer's arrays for this example, named as on disk (`Scorer.score`,
    `PairScorer.score`). aligned_only: bool [T], or None to leave the optional key out. `meta` is shared by all
    records of a run: pickle stores one copy per file. Raises ValueError when a key the mode needs is not given.
    """
    values = {"index": index, "id": id, "probe_text": answer_text, "response_ids": response_ids, "n_truncated": n_truncated,
              "final_generated_text": final_generated_text, "aligned_only": aligned_only, "meta": meta, **stats}
    for side, (text, ids) in enumerate(zip(prompts, prompt_ids)):
        prefix = "base_" if side else ""
        values[f"{prefix}prompt"], values[f"{prefix}prompt_ids"] = text, ids
    rec = {}
    for key in keys_of(mode):
        value = values.get(key.name)
        if value is None:
            if key.optional:
                continue
            if key.dtype != "any":
                raise ValueError(f"a {mode} record needs {key.name}")
        rec[key.name] = np.asarray(value, dtype=key.dtype) if key.is_array else value
    return rec


def check_records(records: list[dict], path: str | Path, mode: str) -> None:
    """Refuse, naming the file and the example, a record list this project did not write for `mode`: a record of another
    mode, a key of the schema missing, an array of positions whose length is not the answer's, or non-finite values
    (NaN or +inf anywhere, -inf outside the keys `schema.Key.neg_inf` allows)."""
    keys = keys_of(mode)
    need = [k.name for k in keys if not k.optional]
    for n, rec in enumerate(records):
        meta = rec.get("meta")
        if isinstance(meta, dict) and meta.get("mode") not in (None, mode):
            raise UserError(f"{path}: holds {meta['mode']} records, expected {mode}")
        missing = [k for k in need if k not in rec]
        if missing:
            hint = " (a file of the reference implementation? data_prep reads those)" if "results" in rec else ""
            raise UserError(f"{path}: record {n} has no {', '.join(missing)}: not {mode} records of this tool{hint}")
        t = len(rec["response_ids"])
        for key in keys:
            if not key.positions or key.name not in rec or key.name == "response_ids":
                continue
            if not isinstance(rec[key.name], np.ndarray) or rec[key.name].shape[:1] != (t,):
                raise UserError(f"{path}: record {n} (id={rec['id']}): {key.name} is not an array of {t} positions (the answer's "
                                "length)")
            _check_finite(rec[key.name], key.name, f"{path}: record {n} (id={rec['id']})")
            if key.name.endswith("rank") and rec[key.name].size and rec[key.name].min() < -1:  # 0-based; -1: no such token
                at = int(np.argmin(rec[key.name]))
                raise UserError(f"{path}: record {n} (id={rec['id']}): {key.name} holds {rec[key.name][at]} at answer position "
                                f"{at}: a rank is 0-based, or -1 for a token the model does not have")


def _check_finite(values: np.ndarray, key: str, where: str) -> None:
    if values.dtype.kind != "f":
        return
    bad = np.isnan(values) | (values == np.inf)
    if not KEYS[key].neg_inf:
        bad |= values == -np.inf
    if bad.any():
        first = tuple(np.argwhere(bad)[0])
        raise UserError(f"{where}: {key} holds {values[first]} at answer position {first[0]}: made from logits that were not "
                        "finite (float16 overflow?); recompute it with --dtype bfloat16 or float32")


def i2i_records_for(path: str | None, items: list[dict], start: int, end: int) -> list[dict]:
    """i2b: the i2i record of each example in [start, end) (of the data `items`), checked against the data file."""
    if not path:
        raise UserError("--mode i2b needs --i2i_pkl_file: the i2i records of the same data (merged, or a shard covering the "
                        "slice)")
    records = store.load_records(path)
    check_records(records, path, "i2i")
    by_index: dict[int, dict] = {}
    for rec in records:
        if rec["index"] in by_index:
            raise UserError(f"{path}: example {rec['index']} appears twice")
        by_index[rec["index"]] = rec
    held = f"it holds examples {min(by_index)}..{max(by_index)}" if by_index else "it is empty"
    out = []
    for i in range(start, end):
        rec = by_index.get(i)
        if rec is None:
            raise UserError(f"{path}: no record for example {i} (id={items[i]['id']}); {held}")
        if rec["id"] != items[i]["id"]:
            raise UserError(f"{path}: example {i} has id {rec['id']!r} but the data file says {items[i]['id']!r}: made from "
                            "another data file?")
        if rec["probe_text"] != answer_of(items[i]):
            raise UserError(f"{path}: the answer of example {i} (id={rec['id']}) differs from output[0] in the data file")
        out.append(rec)
    return out


PROVENANCE = ("mode", "model", "revision", "dtype", "template", "top_k", "tokenization", "adapter", "version", "git")


def provenance(meta: dict, side: str) -> dict | str:
    """How one side ("aligned" or "base") of a run was made, from its records' `meta` (`PROVENANCE`: the mode of the
    records it came from, model, revision, dtype, template (the base side's; None: the bare query, or the aligned side,
    which is scored on the chat prompt), top_k, tokenization, adapter, the package version and git commit that scored
    it); "reference" for the reference's pickles, which record none of it."""
    if meta.get("source") == "reference":
        return "reference"
    prefix = "base_" if side == "base" and meta.get("mode") == "pair" else ""
    versions = meta.get("versions") or {}
    return {"mode": meta.get("mode"), "model": meta.get(f"{prefix}model"), "revision": meta.get(f"{prefix}revision"),
            "dtype": meta.get("dtype"), "template": meta.get("template") if side == "base" else None, "top_k": meta.get("top_k"),
            "tokenization": meta.get("tokenization"), "adapter": meta.get(f"{prefix}adapter"),
            "version": versions.get("aligntds"), "git": versions.get("git")}


def run_settings(meta: dict) -> dict:
    return {k: meta.get(k) for k in RUN_KEYS}


def settings_difference(a: dict, b: dict, keys=RUN_KEYS) -> str:
    """'top_k: 30 != 50; dtype: ...' for the run settings on which two metas disagree ('' if none)."""
    diffs = []
    for k in keys:
        if a.get(k) != b.get(k):
            va, vb = (repr(x) if not isinstance(x, str) or len(x) < 60 else repr(x[:57] + "...") for x in (a.get(k), b.get(k)))
            diffs.append(f"{k}: {va} != {vb}")
    return "; ".join(diffs)


def keep_shard(shard: Path, planned: dict, overwrite: bool) -> bool:
    """True when `shard` exists (complete: writes are atomic), made with the `planned` run settings, and is not to be
    overwritten; a `UserError` when it was made with other settings. Otherwise checks, before any scoring, that its
    folder can be written."""
    if shard.exists() and not overwrite:
        records = store.load_records(shard)
        diff = settings_difference(records[0]["meta"], planned, keys=planned) if records else ""
        if diff:
            raise UserError(f"{shard} exists with other settings ({diff}); pass --overwrite to recompute it")
        log.info(f"{shard} exists: skipping (pass --overwrite to recompute)")
        return True
    store.ensure_writable_folder(shard.parent)
    return False


def save_shard(shard: Path, records: list[dict], models: str) -> None:
    """Write a run's records, saying how many positions are aligned_only and how many answers were cut to the context
    of `models` (as named in the messages)."""
    marked = sum(int(r["aligned_only"].sum()) for r in records if "aligned_only" in r)
    if marked:
        log.info(f"{marked} answer positions hold a token only the aligned vocabulary has (or follow one): "
                 "marked aligned_only, never classed")
    store.save_records(shard, records)
    cut = [r["n_truncated"] for r in records if r["n_truncated"]]
    if cut:
        log.warning(f"{len(cut)} answers were cut to fit the context of {models} ({sum(cut)} tokens dropped; see n_truncated)")
    log.info(f"wrote {shard}: {len(records)} examples, {sum(len(r['response_ids']) for r in records)} answer positions")

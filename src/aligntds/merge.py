"""Merging shards: `DIR/shards/{pair}-{mode}.[s:e].pkl`, in start order, into `DIR/{pair}-{mode}.pkl`.

The shards must tile the data exactly: from example 0 to the data length recorded in their
metadata, with no gap and no overlap (`check_tiling`, which the merge of generated answers shares),
every record where its file name says, all made with the same settings. Anything else is refused with a message
that names the shards; nothing is dropped or duplicated silently.

    from aligntds.merge import merge_shards
    merge_shards("saved_logits/just_eval/llama2", "llama2", "i2i")
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from . import store
from .errors import UserError
from .records import check_records, run_settings, settings_difference

log = logging.getLogger("aligntds")


def find_shards(shard_dir: Path, pair: str, mode: str) -> list[tuple[int, int, Path]]:
    """(start, end, path) of every shard of this pair and mode, sorted by start."""
    found = []
    for path in shard_dir.glob("*.pkl"):
        parsed = store.parse_shard_name(path.name)
        if parsed and parsed[:2] == (pair, mode):
            found.append((parsed[2], parsed[3], path))
    return sorted(found)


def check_tiling(tiles: Sequence[tuple[int, int, str]], start: int, end: int | None, what: str = "shard",
                 whole: str = "", folder: str = "") -> None:
    """Refuse, with one line naming the file, ranges that do not tile examples [start, end) exactly.

    tiles: (start, end, file name) of each file, sorted by start; each must begin where the one before it ended.
    end: None when not known yet (then only gaps and overlaps between the files are checked). what: how a file
    is called in the message ("shard", "part"); whole: what `end` is ("the data has 7 examples"); folder: the files'
    folder, which the message names first when the names are bare.
    """
    where = f"{folder}: " if folder else ""
    expected = start
    for s, e, name in tiles:
        if s > expected:
            raise UserError(f"{where}gap: no {what} holds examples [{expected}:{s}] (before {name})")
        if s < expected:
            raise UserError(f"{where}overlap: {name} starts at {s}, but the {what}s before it already hold examples up to "
                            f"{expected}")
        expected = e
    if end is not None and expected < end:
        raise UserError(f"{where}gap: no {what} holds examples [{expected}:{end}] ({whole})")
    if end is not None and expected > end:
        raise UserError(f"{where}{tiles[-1][2]} holds examples up to {expected}, past the end {end} ({whole})")


def merge_shards(directory: str | Path, pair: str, mode: str) -> Path:
    directory = Path(directory)
    shard_dir = directory / "shards"
    if not shard_dir.is_dir():
        raise UserError(f"{shard_dir}: no such folder (merge_logits.py reads DIR/shards/{pair}-{mode}.[s:e].pkl)")
    shards = find_shards(shard_dir, pair, mode)
    if not shards:
        raise UserError(f"{shard_dir}: no shards named {store.shard_name(pair, mode, 0, 0).replace('[0:0]', '[start:end]')}")

    tiles = [(start, end, path.name) for start, end, path in shards]
    check_tiling(tiles, 0, None, folder=str(shard_dir))  # gaps and overlaps before anything is read
    merged: list[dict] = []
    settings = n_data = None
    for start, end, path in shards:
        records = store.load_records(path)
        check_records(records, path, mode)
        indices = [r["index"] for r in records]
        if indices != list(range(start, end)):
            raise UserError(f"{path}: holds examples {indices[:1]}..{indices[-1:]} ({len(records)} records), its name says "
                            f"[{start}:{end}]")
        for rec in records:
            here = run_settings(rec["meta"])
            if settings is None:
                settings, n_data, first = here, here["n_data"], path.name
            elif here != settings:
                raise UserError(f"{path.name} was made with other settings than {first} ({settings_difference(settings, here)})")
        merged.extend(records)
    if n_data is not None:
        check_tiling(tiles, 0, n_data, whole=f"the data has {n_data} examples", folder=str(shard_dir))

    out = directory / store.merged_name(pair, mode)
    store.save_records(out, merged)
    positions = sum(len(r["response_ids"]) for r in merged)
    cut = sum(1 for r in merged if r["n_truncated"])
    shards_merged = f"{len(shards)} shard" + ("s" if len(shards) != 1 else "")
    log.info(f"merged {shards_merged} into {out}: {len(merged)} examples, {positions} answer positions"
             + (f", {cut} answers cut to the context" if cut else ""))
    return out

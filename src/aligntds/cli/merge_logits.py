"""Command line of `src/scripts/merge_logits.py DIR PAIR MODE` (the reference's positional form)."""

from __future__ import annotations

import argparse
from typing import Sequence

from ..errors import run_cli, setup_logging


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="src/scripts/merge_logits.py",
        description="Merge DIR/shards/PAIR-MODE.[s:e].pkl, in start order, into DIR/PAIR-MODE.pkl; gaps and overlaps are refused.",
    )
    p.add_argument("directory", metavar="DIR", help="the folder above shards/ (the merged file is written here)")
    p.add_argument("pair", metavar="PAIR", help="pair name used in the shard names, e.g. llama2")
    p.add_argument("mode", metavar="MODE", help="i2i, i2b or pair")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from ..merge import merge_shards

    args = make_parser().parse_args(argv)
    setup_logging()
    return run_cli(lambda: merge_shards(args.directory, args.pair, args.mode))

"""Command line of `src/scripts/merge_logits.py DIR PAIR MODE` (the reference's positional form):
the fields of `aligntds.options.MergeOptions`."""

from __future__ import annotations

import argparse
from typing import Sequence

from ..flags import make_parser as flag_parser
from ..options import MergeOptions
from . import run_script

DESCRIPTION = "Merge DIR/shards/PAIR-MODE.[s:e].pkl, in start order, into DIR/PAIR-MODE.pkl; gaps and overlaps are refused."


def make_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    return flag_parser(MergeOptions, parser, prog="src/scripts/merge_logits.py", description=DESCRIPTION)


def main(argv: Sequence[str] | None = None) -> int:
    from ..merge import merge_shards

    return run_script(make_parser(), MergeOptions, argv, lambda o: merge_shards(o.directory, o.pair, o.mode))

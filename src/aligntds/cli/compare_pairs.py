"""Command line of `src/demo/compare_pairs.py SUMMARY.json ...` and `... --chain SUMMARY.json ...` (stages in order):
the fields of `aligntds.options.CompareOptions`."""

from __future__ import annotations

import argparse
from typing import Sequence

from ..errors import log
from ..flags import make_parser as flag_parser
from ..options import CompareOptions
from . import run_script

DESCRIPTION = ("One page comparing several runs (pairs, or one pair with different base templates): class ratios, shared and "
               "unique shifted tokens, shift-by-position curves, and how each run was made. With --chain, the stages of a "
               "checkpoint chain: the same across stages, and the stage at which each shifted token first appears.")


def make_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    return flag_parser(CompareOptions, parser, prog="src/demo/compare_pairs.py", description=DESCRIPTION)


def main(argv: Sequence[str] | None = None) -> int:
    from ..compare import compare_chain, compare_pairs

    def work(o: CompareOptions):
        labels = [x.strip() for x in o.labels.split(",")] if o.labels else None
        page = (compare_chain if o.chain else compare_pairs)(o.summaries, o.out, labels)
        log.info(f"open {page.resolve().as_uri()}")

    return run_script(make_parser(), CompareOptions, argv, work)

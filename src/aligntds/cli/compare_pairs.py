"""Command line of `src/demo/compare_pairs.py SUMMARY.json ...` and `... --chain SUMMARY.json ...` (stages in order)."""

from __future__ import annotations

import argparse
from typing import Sequence

from ..errors import log, run_cli, setup_logging


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="src/demo/compare_pairs.py",
        description="One page comparing several runs (pairs, or one pair with different base templates): class ratios, "
        "shared and unique shifted tokens, shift-by-position curves. With --chain, the stages of a checkpoint chain: "
        "the same across stages, and the stage at which each shifted token first appears.",
    )
    p.add_argument("--chain", action="store_true",
                   help="the summaries are the stages of one chain, in stage order, each scored against the same base on the "
                   "same answers (scripts/run_chain.sh); default output docs/chain/")
    p.add_argument("summaries", nargs="+", metavar="SUMMARY.json", help="summary.json files written by generate_html or data_prep")
    p.add_argument("--out", default=None, metavar="DIR", help="output folder (default docs/compare/, or docs/chain/ with --chain)")
    p.add_argument("--labels", default=None, help="comma-separated names for the runs, in order (default: their pair names)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from ..compare import compare_chain, compare_pairs

    args = make_parser().parse_args(argv)
    setup_logging()
    labels = [x.strip() for x in args.labels.split(",")] if args.labels else None

    def work():
        page = (compare_chain if args.chain else compare_pairs)(args.summaries, args.out, labels)
        log.info(f"open {page.resolve().as_uri()}")

    return run_cli(work)

"""Command line of `src/demo/generate_html.py PAIR` (the reference's positional form)."""

from __future__ import annotations

import argparse
from typing import Sequence

from ..errors import log, run_cli, setup_logging


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="src/demo/generate_html.py",
        description="Render the prepared data of PAIR as static pages: index.html, one page per example, summary.html "
        "and summary.json. Self-contained: they open from file:// with no network.",
    )
    p.add_argument("pair", metavar="PAIR", help="the name given to data_prep, e.g. llama2_tp")
    p.add_argument("--data", default=None, metavar="FILE", help="prepared data (default: data_prep's default output for PAIR)")
    p.add_argument("--out", default=None, metavar="DIR", help="output folder (default docs/PAIR_justeval/)")
    p.add_argument("--limit", type=int, default=None, metavar="N", help="pages for the first N examples only (the summary covers all)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from ..report import generate_html

    args = make_parser().parse_args(argv)
    setup_logging()

    def work():
        index = generate_html(args.pair, args.data, args.out, args.limit)
        log.info(f"open {index.resolve().as_uri()}")

    return run_cli(work)

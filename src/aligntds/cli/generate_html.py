"""Command line of `src/demo/generate_html.py PAIR` (the reference's positional form):
the fields of `aligntds.options.HtmlOptions`."""

from __future__ import annotations

import argparse
from typing import Sequence

from ..errors import log
from ..flags import make_parser as flag_parser
from ..options import HtmlOptions
from . import run_script

DESCRIPTION = ("Render the prepared data of PAIR as static pages: index.html, one page per example, summary.html and "
               "summary.json. Self-contained: they open from file:// with no network.")


def make_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    return flag_parser(HtmlOptions, parser, prog="src/demo/generate_html.py", description=DESCRIPTION)


def main(argv: Sequence[str] | None = None) -> int:
    from ..report import generate_html

    def work(o: HtmlOptions):
        log.info(f"open {generate_html(o.pair, o.data, o.out, o.limit).resolve().as_uri()}")

    return run_script(make_parser(), HtmlOptions, argv, work)

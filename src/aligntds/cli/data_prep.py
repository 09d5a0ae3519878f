"""Command line of `src/demo/data_prep.py PAIR I2I_PKL [I2B_PKL]` (the reference's positional form):
the fields of `aligntds.options.PrepOptions`.

    python src/demo/data_prep.py demo saved_logits/just_eval/demo/demo-i2i.pkl saved_logits/just_eval/demo_tp/demo-i2b.pkl \
        --slice_by category
"""

from __future__ import annotations

import argparse
from typing import Sequence

from ..flags import make_parser as flag_parser
from ..options import PrepOptions
from . import run_script

DESCRIPTION = ("Join i2i and i2b records, compute every position's shift class and metrics, write the prepared data, "
               "summary.json and the per-position curves, and print the corpus summary.")


def make_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    return flag_parser(PrepOptions, parser, prog="src/demo/data_prep.py", description=DESCRIPTION)


def main(argv: Sequence[str] | None = None) -> int:
    from ..prepare import prepare_files

    return run_script(make_parser(), PrepOptions, argv, lambda o: prepare_files(
        o.pair, o.i2i, o.i2b, o.out, o.tokenizer, o.truncate_mismatched, o.slice_by, o.data_file, o.slices))

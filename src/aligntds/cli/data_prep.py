"""Command line of `src/demo/data_prep.py PAIR I2I_PKL I2B_PKL` (the reference's positional form).

    python src/demo/data_prep.py demo saved_logits/just_eval/demo/demo-i2i.pkl saved_logits/just_eval/demo_tp/demo-i2b.pkl \
        --slice_by category
"""

from __future__ import annotations

import argparse
from typing import Sequence

from ..errors import run_cli, setup_logging


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="src/demo/data_prep.py",
        description="Join i2i and i2b records, compute every position's shift class and metrics, write the prepared "
        "data, summary.json and the per-position curves, and print the corpus summary.",
    )
    p.add_argument("pair", metavar="PAIR", help="name of the analysis, e.g. llama2_tp (names the outputs)")
    p.add_argument("i2i", metavar="I2I_PKL", help="merged i2i records (or one --mode pair file, or the reference's i2i pickle)")
    p.add_argument("i2b", metavar="I2B_PKL", nargs="?", default=None, help="merged i2b records (not needed for a pair file)")
    p.add_argument("--out", default=None, metavar="FILE",
                   help="prepared data (default saved_logits/prepared/just_eval+PAIR.pkl); .summary.json and .curves.csv go beside it")
    p.add_argument("--tokenizer", default=None, help="tokenizer for the token strings (default: the aligned model's, from the records)")
    p.add_argument("--slice_by", action="append", default=[], metavar="FIELD",
                   help="summarize per label of this field of each example (repeatable), read from the data file the records "
                   "were made from (their meta data_file) or --data_file; an example without the field is labelled null")
    p.add_argument("--data_file", default=None, metavar="FILE",
                   help="the data file to read --slice_by fields from (default: the one the records name); examples matched by "
                   "index, checked by id")
    p.add_argument("--slices", default=None, metavar="FILE",
                   help='labels from a JSON file: {"id": "label"} (one field, named after the file) or {"id": {"field": "label"}}')
    p.add_argument("--truncate_mismatched", action="store_true",
                   help="reference pickles only: cut answers whose i2i and i2b lengths differ to the shorter, as the reference did")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from ..prepare import prepare_files

    args = make_parser().parse_args(argv)
    setup_logging()
    return run_cli(lambda: prepare_files(args.pair, args.i2i, args.i2b, args.out, args.tokenizer, args.truncate_mismatched,
                                         args.slice_by, args.data_file, args.slices))

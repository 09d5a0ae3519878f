"""Command line of `src/logit_analysis.py` (the reference's flags, plus model, dtype, batching and pair flags):
the fields of `aligntds.options.ScoreOptions`."""

from __future__ import annotations

import argparse
from typing import Sequence

from ..flags import make_parser as flag_parser
from ..options import ScoreOptions
from . import run_script

DESCRIPTION = ("Score the aligned model's answers under the aligned model (i2i), the base model (i2b) or both (pair: exact "
               "divergences), one forward pass per answer, and write one shard of records. Under accelerate launch or "
               "torchrun each process takes its own part of [--start, --end) and writes its own shard.")


def make_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    return flag_parser(ScoreOptions, parser, prog="src/logit_analysis.py", description=DESCRIPTION)


def main(argv: Sequence[str] | None = None) -> int:
    from ..analysis import run

    return run_script(make_parser(), ScoreOptions, argv, run, ranked=True)

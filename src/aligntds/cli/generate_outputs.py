"""Command line of `src/generate_outputs.py` (greedy answers of the aligned model, in the pipeline's data format):
the fields of `aligntds.options.GenOptions`."""

from __future__ import annotations

import argparse
from typing import Sequence

from ..flags import make_parser as flag_parser
from ..options import GenOptions
from . import run_script

DESCRIPTION = ("Answer instructions greedily with the aligned model (its chat template, batched, KV cache) and write a JSON "
               "list of {id, pure_input, input, output: [answer], output_ids, generator} for src/logit_analysis.py. Under "
               "accelerate launch or torchrun each process answers its own part of [--start, --end) and writes its own part "
               "file (DIR/parts/NAME.[s:e].json for --output_file DIR/NAME.json); the same command with --merge then joins them.")


def make_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    return flag_parser(GenOptions, parser, prog="src/generate_outputs.py", description=DESCRIPTION)


def main(argv: Sequence[str] | None = None) -> int:
    from ..generate import run

    return run_script(make_parser(), GenOptions, argv, run, ranked=True)

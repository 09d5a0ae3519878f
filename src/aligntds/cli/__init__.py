"""The scripts' command lines. Each module is a docstring, `DESCRIPTION`, `make_parser(parser=None)` (the flags of its
dataclass in `aligntds.options`, added to a new parser or to a given one, e.g. a console command's subparser) and
`main(argv)`, which `run_script` runs: parse, log, do the work, exit status 0 or 2 (a user's mistake, one line)."""

from __future__ import annotations

import argparse
from typing import Callable, Sequence

from ..errors import run_cli, setup_logging
from ..flags import from_args


def run_script(parser: argparse.ArgumentParser, options: type, argv: Sequence[str] | None, work: Callable,
               ranked: bool = False) -> int:
    """Parse `argv` into `options`, set up logging and run `work(opts)`; with `ranked`, `work(opts, rank)` as one process
    of a launch (`accelerate launch`, `torchrun`): messages and progress bars on rank 0 only, warnings on every rank."""
    opts = from_args(options, parser.parse_args(argv))
    setup_logging()

    def call():
        if not ranked:
            return work(opts)
        from ..distributed import current_rank, quiet_libraries

        rank = current_rank()
        setup_logging(quiet=not rank.is_main)
        if not rank.is_main:
            quiet_libraries()
        return work(opts, rank)

    return run_cli(call)

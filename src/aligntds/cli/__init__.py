"""The scripts' command lines. Each module is a line of docstring and `make_parser, main = script(Options, prog, work)`:
the flags are the fields of `Options` (`aligntds.options`; its docstring is the description), `work(options)` does the
job. A console command adds a script's flags to its own subparser (`make_parser(subparser)`, which also sets the
parsed namespace's `run`: argparse's idiom for subcommands) and runs the script with `args.run(args)`: the same
dataclass (`aligntds.flags.from_args`), logging and exit status as the script (`aligntds.cli.main`, the `aligntds` command).

    from aligntds.cli.merge_logits import main
    main(["saved_logits/just_eval/llama2/", "llama2", "i2i"])     # exit status: 0, or 2 for a user's mistake (one line)
"""

from __future__ import annotations

import argparse
import inspect
from collections.abc import Callable, Sequence

from ..errors import run_cli, setup_logging
from ..flags import from_args
from ..flags import make_parser as flag_parser


def script(options: type, prog: str, work: Callable, ranked: bool = False) -> tuple[Callable, Callable]:
    """A script's `make_parser(parser=None)` and `main(argv=None)`.

    make_parser: the flags of `options` on a new parser (`prog`, the dataclass's docstring as the description), or added
    to `parser`; the parsed namespace's `run(args)` runs the script on it. main: parse `argv`, set up logging and run
    `work(opts)`, returning the exit status (2 and one line for a `UserError`). With `ranked`, `work(opts, rank)` runs as
    one process of a launch (`accelerate launch`, `torchrun`): messages and progress bars on rank 0 only, warnings on
    every rank.
    """

    def run(args: argparse.Namespace) -> int:
        opts = from_args(options, args)
        setup_logging()
        return run_cli(lambda: _ranked(work, opts) if ranked else work(opts))

    def make_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
        parser = flag_parser(options, parser, prog=prog, description=inspect.cleandoc(options.__doc__ or ""))
        parser.set_defaults(run=run)
        return parser

    def main(argv: Sequence[str] | None = None) -> int:
        args = make_parser().parse_args(argv)
        return args.run(args)

    return make_parser, main


def _ranked(work: Callable, opts):
    from ..distributed import current_rank, quiet_libraries

    rank = current_rank()
    setup_logging(quiet=not rank.is_main)
    if not rank.is_main:
        quiet_libraries()
    return work(opts, rank)

"""Command line of `scripts/build_demo_pair.py` (build or reuse the demo pair, write the demo instructions):
the fields of `aligntds.options.BuildDemoOptions`."""

from __future__ import annotations

import argparse
from typing import Sequence

from ..flags import make_parser as flag_parser
from ..options import BuildDemoOptions
from . import run_script

DESCRIPTION = ("Train the demo pair (a small Llama base model and its aligned version, planted style) under ROOT, or reuse it "
               "when its stamp matches the build config; write the demo instructions.")


def make_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    return flag_parser(BuildDemoOptions, parser, prog="scripts/build_demo_pair.py", description=DESCRIPTION)


def main(argv: Sequence[str] | None = None) -> int:
    from ..demo_pair import build_pair, write_instructions

    def work(o: BuildDemoOptions):
        build_pair(o.root, force=o.force)
        write_instructions(o.instructions)

    return run_script(make_parser(), BuildDemoOptions, argv, work)

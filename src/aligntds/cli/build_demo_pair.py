"""`scripts/build_demo_pair.py`: build or reuse the demo pair, write the demo instructions (`options.BuildDemoOptions`)."""

from ..demo_pair import build_pair, write_instructions
from ..options import BuildDemoOptions
from . import script


def work(o: BuildDemoOptions) -> None:
    build_pair(o.root, force=o.force)
    write_instructions(o.instructions)


make_parser, main = script(BuildDemoOptions, "scripts/build_demo_pair.py", work)

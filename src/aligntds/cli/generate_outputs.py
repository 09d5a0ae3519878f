"""`src/generate_outputs.py`: the flags are `aligntds.options.GenOptions`, the work `aligntds.generate.run`."""

from ..generate import run
from ..options import GenOptions
from . import script

make_parser, main = script(GenOptions, "src/generate_outputs.py", run, ranked=True)

"""`src/logit_analysis.py`: the flags are `aligntds.options.ScoreOptions`, the work `aligntds.analysis.run`."""

from ..analysis import run
from ..options import ScoreOptions
from . import script

make_parser, main = script(ScoreOptions, "src/logit_analysis.py", run, ranked=True)

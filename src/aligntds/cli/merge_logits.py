"""`src/scripts/merge_logits.py DIR PAIR MODE` (the reference's positional form): `aligntds.options.MergeOptions`."""

from ..merge import merge_shards
from ..options import MergeOptions
from . import script

make_parser, main = script(MergeOptions, "src/scripts/merge_logits.py", lambda o: merge_shards(o.directory, o.pair, o.mode))

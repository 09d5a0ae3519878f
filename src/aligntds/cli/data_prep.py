"""`src/demo/data_prep.py PAIR I2I_PKL [I2B_PKL]` (the reference's positional form): `aligntds.options.PrepOptions`."""

from ..data_prep import prepare_files
from ..options import PrepOptions
from . import script

make_parser, main = script(PrepOptions, "src/demo/data_prep.py", lambda o: prepare_files(
    o.pair, o.i2i, o.i2b, o.out, o.tokenizer, o.truncate_mismatched, o.slice_by, o.data_file, o.slices, o.data_split,
    o.data_revision, o.columns, o.parquet))

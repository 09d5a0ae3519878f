"""`src/demo/compare_pairs.py SUMMARY.json ...` and `... --chain SUMMARY.json ...`: `aligntds.options.CompareOptions`."""

from ..compare import compare_chain, compare_pairs
from ..errors import log
from ..options import CompareOptions
from . import script


def work(o: CompareOptions) -> None:
    labels = [x.strip() for x in o.labels.split(",")] if o.labels else None
    page = (compare_chain if o.chain else compare_pairs)(o.summaries, o.out, labels)
    log.info(f"open {page.resolve().as_uri()}")


make_parser, main = script(CompareOptions, "src/demo/compare_pairs.py", work)

"""`src/demo/generate_html.py PAIR` (the reference's positional form): `aligntds.options.HtmlOptions`."""

from ..errors import log
from ..options import HtmlOptions
from ..report import generate_html
from . import script


def work(o: HtmlOptions) -> None:
    log.info(f"open {generate_html(o.pair, o.data, o.out, o.limit).resolve().as_uri()}")


make_parser, main = script(HtmlOptions, "src/demo/generate_html.py", work)
